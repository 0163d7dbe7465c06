import { checkAttribution, decodeCleartext, encodeCleartext } from "@mastodon-mls/protocol";
import { describe, expect, it } from "vitest";
import { buildCreateNote } from "./cleartext.js";

describe("buildCreateNote", () => {
  it("builds a DESIGN §8 Create of a Note that the protocol accepts both ways and attributes to the sender", () => {
    const now = new Date("2025-01-02T03:04:05.000Z");
    const a = buildCreateNote("acct:alice@a.test", "hello <b>world</b>", { now });
    const back = decodeCleartext(encodeCleartext(a));
    expect(back.kind).toBe("activity");
    if (back.kind !== "activity" || back.activity.type !== "Create") throw new Error("not a Create");
    expect(back.activity.object).toMatchObject({
      type: "Note",
      attributedTo: "acct:alice@a.test",
      content: "hello <b>world</b>",
      published: "2025-01-02T03:04:05.000Z",
    });
    expect(back.activity.id).toMatch(/^urn:uuid:/);
    expect(back.activity.object.id).not.toBe(back.activity.id);
    expect(checkAttribution(back.activity, "acct:alice@a.test")).toBeUndefined();
    expect(checkAttribution(back.activity, "acct:mallory@a.test")).toBeDefined();
  });

  it("carries inReplyTo and gives every note a fresh id", () => {
    const first = buildCreateNote("acct:alice@a.test", "one");
    const reply = buildCreateNote("acct:bob@a.test", "two", { inReplyTo: first.object.id });
    expect(reply.object.inReplyTo).toBe(first.object.id);
    expect(reply.object.id).not.toBe(first.object.id);
    expect(() => encodeCleartext(reply)).not.toThrow();
  });
});
