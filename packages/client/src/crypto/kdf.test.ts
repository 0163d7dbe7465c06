import { argon2id as nobleArgon2id } from "@noble/hashes/argon2.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_KDF, KEY_BYTES, deriveKey, passphraseBytes } from "./kdf.js";

// The key derivation must give exactly what any RFC 9106 Argon2id gives for the same inputs: stores and
// backups written by earlier releases (derived with @noble/hashes) have to keep opening. @noble/hashes is
// the independent reference here.

describe("deriveKey (Argon2id)", () => {
  it("matches an independent implementation for any secret, salt and small parameters", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 4 }),
        async (secret, salt, t, p) => {
          const m = 8 * p + 8;
          const ours = await deriveKey(secret, salt, { m, t, p });
          const theirs = nobleArgon2id(secret, salt, { m, t, p, dkLen: KEY_BYTES, version: 0x13 });
          expect(Buffer.from(ours).toString("hex")).toBe(Buffer.from(theirs).toString("hex"));
        },
      ),
      { numRuns: 25 },
    );
  });

  it("matches it with the parameters of DESIGN §9, and reports completion", async () => {
    const secret = passphraseBytes("correct horse battery staple");
    const salt = new Uint8Array(16).map((_, i) => i);
    const seen: number[] = [];
    const ours = await deriveKey(secret, salt, DEFAULT_KDF, (f) => seen.push(f));
    const theirs = nobleArgon2id(secret, salt, { ...DEFAULT_KDF, dkLen: KEY_BYTES, version: 0x13 });
    expect(Buffer.from(ours).equals(Buffer.from(theirs))).toBe(true);
    expect(seen).toEqual([1]);
  });
});
