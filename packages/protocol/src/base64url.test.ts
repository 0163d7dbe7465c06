import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromBase64url, toBase64url } from "./base64url.js";
import { ProtocolError } from "./errors.js";

describe("base64url", () => {
  it("round-trips any bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        expect(fromBase64url(toBase64url(bytes))).toEqual(bytes);
      }),
    );
  });

  it("accepts exactly one spelling of each byte string", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (text) => {
        let decoded: Uint8Array;
        try {
          decoded = fromBase64url(text);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
          return;
        }
        expect(toBase64url(decoded)).toBe(text);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses padding, the standard alphabet, whitespace and stray bits", () => {
    for (const bad of ["AA==", "A+B/", "AA AA", "AB", "A", "AAB"]) {
      expect(() => fromBase64url(bad), bad).toThrow(ProtocolError);
    }
    expect(fromBase64url("AA")).toEqual(Uint8Array.of(0));
  });

  it("refuses input over the size limit before decoding", () => {
    expect(() => fromBase64url("A".repeat(400), 100)).toThrow(/too large/);
  });
});
