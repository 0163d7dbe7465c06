import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalAcct, formatIdentity, parseAcct, parseCanonicalIdentity } from "./acct.js";
import { ProtocolError } from "./errors.js";

describe("acct handles", () => {
  it("canonicalises the forms people type", () => {
    expect(canonicalAcct("@Alice@Example.Social")).toBe("alice@example.social");
    expect(canonicalAcct("acct:bob@b.test")).toBe("bob@b.test");
    expect(canonicalAcct("carol@bücher.example")).toBe("carol@xn--bcher-kva.example");
    expect(formatIdentity(parseAcct("dave_1@x.test"))).toBe("acct:dave_1@x.test");
  });

  it("refuses malformed handles", () => {
    for (const bad of [
      "alice",
      "@alice",
      "a@b@c",
      "al ice@x.test",
      "alice@",
      "alice@-x.test",
      "alice@x..test",
      "",
      "@@",
    ]) {
      expect(() => parseAcct(bad), bad).toThrow(ProtocolError);
    }
  });

  it("accepts only canonical identities in credentials", () => {
    expect(parseCanonicalIdentity("acct:alice@a.test").user).toBe("alice");
    for (const bad of [
      "acct:Alice@a.test",
      "alice@a.test",
      "acct:@alice@a.test",
      "acct:alice@A.test",
      "acct:carol@bücher.example",
    ]) {
      expect(() => parseCanonicalIdentity(bad), bad).toThrow(ProtocolError);
    }
  });

  it("never throws anything but ProtocolError, and canonical output is a fixed point", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (text) => {
        try {
          const c = canonicalAcct(text);
          expect(canonicalAcct(c)).toBe(c);
          expect(parseCanonicalIdentity(`acct:${c}`)).toEqual(parseAcct(c));
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
