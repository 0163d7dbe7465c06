import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkAttribution,
  decodeCleartext,
  encodeCleartext,
  AS_CONTEXT,
  type Activity,
} from "./cleartext.js";
import { LIMITS } from "./constants.js";
import { ProtocolError } from "./errors.js";

const alice = "acct:alice@a.test";
const urn = () => `urn:uuid:${randomUUID()}`;
const now = new Date().toISOString();

function note(content: string, attributedTo = alice, type: "Create" | "Update" = "Create"): Activity {
  return {
    "@context": AS_CONTEXT,
    v: 1,
    type,
    id: urn(),
    actor: alice,
    published: now,
    object: { type: "Note", id: urn(), attributedTo, published: now, content },
  };
}

describe("cleartext", () => {
  it("round-trips every activity type", () => {
    const target = urn();
    const activities: Activity[] = [
      note("hello"),
      note("edited", alice, "Update"),
      {
        "@context": AS_CONTEXT,
        v: 1,
        type: "Delete",
        id: urn(),
        actor: alice,
        published: now,
        object: target,
      },
      {
        "@context": AS_CONTEXT,
        v: 1,
        type: "Like",
        id: urn(),
        actor: alice,
        published: now,
        object: target,
        content: "👍",
      },
      { "@context": AS_CONTEXT, v: 1, type: "Read", id: urn(), actor: alice, published: now, object: target },
      { "@context": AS_CONTEXT, v: 1, type: "Undo", id: urn(), actor: alice, published: now, object: target },
    ];
    for (const a of activities) {
      expect(decodeCleartext(encodeCleartext(a))).toEqual({ kind: "activity", activity: a });
    }
  });

  it("keeps unknown types and versions as unsupported instead of dropping them", () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ type: "Question", v: 1 }));
    expect(decodeCleartext(bytes)).toEqual({ kind: "unsupported", type: "Question", version: 1 });
    const future = new TextEncoder().encode(JSON.stringify({ ...note("x"), v: 2 }));
    expect(decodeCleartext(future).kind).toBe("unsupported");
  });

  it("refuses malformed known activities, non-JSON and oversized input", () => {
    const bad = { ...note("x"), object: { type: "Note", id: "not-a-urn" } };
    expect(() => decodeCleartext(new TextEncoder().encode(JSON.stringify(bad)))).toThrow(ProtocolError);
    expect(() => decodeCleartext(Uint8Array.of(0xff, 0xfe))).toThrow(ProtocolError);
    expect(() => decodeCleartext(new Uint8Array(LIMITS.cleartextBytes + 1))).toThrow(/too large/);
    expect(() => encodeCleartext(note("x".repeat(LIMITS.cleartextBytes)))).toThrow(ProtocolError);
  });

  it("enforces attribution to the MLS sender", () => {
    expect(checkAttribution(note("hi"), alice)).toBeUndefined();
    expect(checkAttribution(note("hi"), "acct:mallory@a.test")).toMatch(/actor/);
    expect(checkAttribution(note("hi", "acct:bob@a.test"), alice)).toMatch(/attributedTo/);
  });

  it("decoding arbitrary bytes yields a result or a ProtocolError", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.json().map((j) => new TextEncoder().encode(j)),
        ),
        (bytes) => {
          try {
            decodeCleartext(bytes);
          } catch (e) {
            expect(e).toBeInstanceOf(ProtocolError);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
