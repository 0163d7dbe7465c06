import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { NONCE_BYTES, hchacha20, open, seal, sealWithNonce } from "./aead.js";

// Every file of an encrypted device directory, and every backup, is sealed here. Files written by earlier
// releases (sealed with @noble/ciphers) must keep opening, and files written now must open anywhere an
// XChaCha20-Poly1305 exists: the draft's test vectors and @noble/ciphers are the references.

const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("XChaCha20-Poly1305", () => {
  it("gives draft-irtf-cfrg-xchacha-03's HChaCha20 subkey (§2.2.1)", () => {
    const key = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    const nonce = hex("000000090000004a0000000031415927");
    expect(toHex(hchacha20(key, nonce))).toBe(
      "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc",
    );
  });

  it("gives the draft's AEAD test vector (§A.3.1) and opens it", () => {
    const key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    const nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657");
    const aad = hex("50515253c0c1c2c3c4c5c6c7");
    const plaintext = new TextEncoder().encode(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, " +
        "sunscreen would be it.",
    );
    const sealed = sealWithNonce(key, nonce, plaintext, aad);
    expect(toHex(sealed)).toBe(
      "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39" +
        "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9" +
        "21f9664c97637da9768812f615c68b13b52e" +
        "c0875924c1c7987947deafd8780acf49",
    );
    expect(open(key, nonce, sealed, aad)).toEqual(plaintext);
  });

  it("seals exactly as @noble/ciphers does, and each opens the other's output", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
        fc.uint8Array({ maxLength: 300 }),
        fc.uint8Array({ maxLength: 40 }),
        (key, nonce, plaintext, aad) => {
          const ours = sealWithNonce(key, nonce, plaintext, aad);
          const theirs = xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
          expect(toHex(ours)).toBe(toHex(theirs));
          expect(open(key, nonce, theirs, aad)).toEqual(plaintext);
          expect(xchacha20poly1305(key, nonce, aad).decrypt(ours)).toEqual(plaintext);
        },
      ),
    );
  });

  it("refuses any changed bit, a wrong key, nonce or associated data, and truncated input", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 1, maxLength: 100 }),
        fc.nat(),
        (key, plaintext, at) => {
          const aad = new TextEncoder().encode("context");
          const { nonce, ciphertext } = seal(key, plaintext, aad);
          const flipped = ciphertext.slice();
          const i = at % flipped.byteLength;
          flipped[i] = flipped[i]! ^ (1 << (at % 8));
          expect(open(key, nonce, flipped, aad)).toBeUndefined();
          const otherKey = key.slice();
          otherKey[0] = otherKey[0]! ^ 1;
          expect(open(otherKey, nonce, ciphertext, aad)).toBeUndefined();
          const otherNonce = nonce.slice();
          otherNonce[NONCE_BYTES - 1] = otherNonce[NONCE_BYTES - 1]! ^ 1;
          expect(open(key, otherNonce, ciphertext, aad)).toBeUndefined();
          expect(open(key, nonce, ciphertext, new TextEncoder().encode("contexT"))).toBeUndefined();
          expect(open(key, nonce, ciphertext.subarray(0, ciphertext.byteLength - 1), aad)).toBeUndefined();
          expect(open(key, nonce, ciphertext.subarray(0, 15), aad)).toBeUndefined();
          expect(open(key, nonce.subarray(0, 23), ciphertext, aad)).toBeUndefined();
          expect(open(key.subarray(0, 31), nonce, ciphertext, aad)).toBeUndefined();
          expect(open(key, nonce, ciphertext, aad)).toEqual(plaintext);
        },
      ),
    );
  });

  it("refuses to seal with a key or nonce of the wrong size", () => {
    const key = new Uint8Array(32);
    expect(() => sealWithNonce(key, new Uint8Array(12), new Uint8Array(1), new Uint8Array())).toThrow(
      /nonce is 24 bytes/,
    );
    expect(() =>
      sealWithNonce(new Uint8Array(16), new Uint8Array(24), new Uint8Array(1), new Uint8Array()),
    ).toThrow(/key is 32 bytes/);
  });
});
