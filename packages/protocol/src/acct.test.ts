import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalAcct, canonicalDomain, formatIdentity, parseAcct, parseCanonicalIdentity } from "./acct.js";
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

  it("LK-1: a domain with URL syntax in it, or a user that is ASCII only once lower-cased, is refused", () => {
    // node's domainToASCII parses a URL host: "evil.test/.a.test" came out as evil.test, so a handle
    // that reads as ending in a.test named an account on evil.test.
    for (const bad of [
      "alice@evil.test/.a.test",
      "alice@evil.test#.a.test",
      "alice@evil.test?.a.test",
      "alice@evil.test\\.a.test",
      "alice@a.test/",
      "alice@a.test:443",
      "alice@a.test%2e",
      "alice@[::1]",
      "alice@a_b.test",
    ]) {
      expect(() => parseAcct(bad), bad).toThrow(ProtocolError);
    }
    // The user is ASCII as typed: JavaScript lower-cases the Kelvin sign to an ASCII "k".
    expect(() => parseAcct("\u212Aate@a.test")).toThrow(ProtocolError);
    expect(canonicalAcct("Kate@a.test")).toBe("kate@a.test");
    // IDNA's own mappings still canonicalise (one account, one form).
    expect(canonicalAcct("alice@A\u3002Test")).toBe("alice@a.test");
    expect(canonicalAcct("alice@BÜCHER.example")).toBe("alice@xn--bcher-kva.example");
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

  // The pattern before the audit: the language of users is still exactly this one.
  const OLD_USER = /^[a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?$/;
  const accepts = (user: string): boolean => {
    try {
      return parseAcct(`${user}@a.test`).user === user;
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      return false;
    }
  };

  it("accepts exactly the users the old pattern accepted", () => {
    const alphabet = ["a", "z", "0", "9", "_", ".", "-", "!", "é"];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...alphabet), { maxLength: 24 }), (chars) => {
        const user = chars.join("");
        expect(accepts(user), user).toBe(OLD_USER.test(user));
      }),
      { numRuns: 5000 },
    );
    // And every string up to five characters over the symbols that matter, exhaustively.
    let users = [""];
    for (let length = 1; length <= 5; length++) {
      users = users.flatMap((u) => ["a", "_", ".", "-", "!"].map((c) => u + c));
      for (const user of users) expect(accepts(user), user).toBe(OLD_USER.test(user));
    }
  });

  it("refuses an over-long user before any pattern runs over it", () => {
    // Deterministic instead of timed: the old pattern took ~30 ms on this 312-character user, and only
    // the length check stands between such input and a pattern.
    const hostile = `${"a".repeat(312)}.@a.test`;
    const matched: string[] = [];
    const exec = RegExp.prototype.exec;
    RegExp.prototype.exec = function (this: RegExp, text: string) {
      matched.push(text);
      return exec.call(this, text);
    };
    try {
      expect(() => parseAcct(hostile)).toThrow(ProtocolError);
      expect(() => parseCanonicalIdentity(`acct:${hostile}`)).toThrow(ProtocolError);
      expect(parseAcct("ok.user@a.test").user).toBe("ok.user");
    } finally {
      RegExp.prototype.exec = exec;
    }
    // The spy sees every pattern (RegExp#test calls exec); the valid handle shows it was in place.
    expect(matched).toContain("ok.user");
    expect(matched.filter((text) => text.length > 64)).toEqual([]);
  });
});

describe("canonicalDomain", () => {
  it("gives the acct form of any IDNA spelling of a domain, and nothing for what is not a host name", () => {
    expect(canonicalDomain("A.Test")).toBe("a.test");
    expect(canonicalDomain("Bücher.Example")).toBe("xn--bcher-kva.example");
    expect(canonicalDomain("a\u3002test")).toBe("a.test");
    for (const bad of ["", "a.test/.b.test", "a test", "-a.test", "a..test", "x".repeat(64) + ".test"]) {
      expect(canonicalDomain(bad), bad).toBeUndefined();
    }
  });
});
