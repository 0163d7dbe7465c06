import { createCipheriv, createDecipheriv, getCiphers, randomBytes } from "node:crypto";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";

// XChaCha20-Poly1305 with a random 24-byte nonce per message: safe for any number of messages under one
// key (the nonce space is large enough for random nonces), which is how the store uses it.
//
// The store seals every group state it writes (up to megabytes per commit in a large group): in pure
// JavaScript that was the largest cost of sending a message (bench:client). XChaCha20-Poly1305 is by
// definition (draft-irtf-cfrg-xchacha §2.3) ChaCha20-Poly1305 (RFC 8439) under the subkey
// HChaCha20(key, nonce[0..16]) with the nonce 0x00000000 ‖ nonce[16..24]: the short HChaCha20 step runs
// here, the bulk in OpenSSL. The output is byte for byte the same (aead.test.ts checks it against
// @noble/ciphers, which stays the implementation where OpenSSL lacks the cipher, e.g. in FIPS mode).

export const NONCE_BYTES = 24;
const KEY_BYTES = 32;
const TAG_BYTES = 16;
const NATIVE = getCiphers().includes("chacha20-poly1305");

export interface Sealed {
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Sealed {
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  return { nonce, ciphertext: sealWithNonce(key, nonce, plaintext, aad) };
}

/** Ciphertext ‖ 16-byte tag. */
export function sealWithNonce(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  if (!NATIVE) return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
  checkSizes(key, nonce);
  const cipher = createCipheriv("chacha20-poly1305", hchacha20(key, nonce), ietfNonce(nonce), {
    authTagLength: TAG_BYTES,
  });
  cipher.setAAD(aad, { plaintextLength: plaintext.byteLength });
  // A copy, not a view: small Buffers are slices of a shared pool, which would keep these bytes (a data
  // key, when unwrapping) beside unrelated ones for the life of the process.
  return new Uint8Array(Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]));
}

/** The plaintext, or undefined when the key, nonce, associated data or ciphertext is not the one sealed. */
export function open(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | undefined {
  if (nonce.byteLength !== NONCE_BYTES || key.byteLength !== KEY_BYTES) return undefined;
  if (ciphertext.byteLength < TAG_BYTES) return undefined;
  try {
    if (!NATIVE) return xchacha20poly1305(key, nonce, aad).decrypt(ciphertext);
    const body = ciphertext.subarray(0, ciphertext.byteLength - TAG_BYTES);
    const decipher = createDecipheriv("chacha20-poly1305", hchacha20(key, nonce), ietfNonce(nonce), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(aad, { plaintextLength: body.byteLength });
    decipher.setAuthTag(ciphertext.subarray(ciphertext.byteLength - TAG_BYTES));
    // final() throws when the tag does not match: nothing decrypted is returned then.
    return new Uint8Array(Buffer.concat([decipher.update(body), decipher.final()]));
  } catch {
    return undefined;
  }
}

function checkSizes(key: Uint8Array, nonce: Uint8Array): void {
  if (key.byteLength !== KEY_BYTES) throw new RangeError(`an XChaCha20-Poly1305 key is ${KEY_BYTES} bytes`);
  if (nonce.byteLength !== NONCE_BYTES) {
    throw new RangeError(`an XChaCha20-Poly1305 nonce is ${NONCE_BYTES} bytes`);
  }
}

function ietfNonce(nonce: Uint8Array): Uint8Array {
  const out = new Uint8Array(12);
  out.set(nonce.subarray(16, 24), 4);
  return out;
}

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]; // "expand 32-byte k"

function rotl(v: number, c: number): number {
  return (v << c) | (v >>> (32 - c));
}

/** HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the 32-byte subkey for `key` and the first 16 nonce bytes. */
export function hchacha20(key: Uint8Array, nonce: Uint8Array): Uint8Array {
  const k = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  const n = Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength);
  const x = new Uint32Array(16);
  for (let i = 0; i < 4; i++) x[i] = SIGMA[i]!;
  for (let i = 0; i < 8; i++) x[4 + i] = k.readUInt32LE(4 * i);
  for (let i = 0; i < 4; i++) x[12 + i] = n.readUInt32LE(4 * i);
  const qr = (a: number, b: number, c: number, d: number) => {
    let [va, vb, vc, vd] = [x[a]!, x[b]!, x[c]!, x[d]!];
    va = (va + vb) | 0;
    vd = rotl(vd ^ va, 16);
    vc = (vc + vd) | 0;
    vb = rotl(vb ^ vc, 12);
    va = (va + vb) | 0;
    vd = rotl(vd ^ va, 8);
    vc = (vc + vd) | 0;
    vb = rotl(vb ^ vc, 7);
    [x[a], x[b], x[c], x[d]] = [va, vb, vc, vd];
  };
  for (let round = 0; round < 10; round++) {
    qr(0, 4, 8, 12);
    qr(1, 5, 9, 13);
    qr(2, 6, 10, 14);
    qr(3, 7, 11, 15);
    qr(0, 5, 10, 15);
    qr(1, 6, 11, 12);
    qr(2, 7, 8, 13);
    qr(3, 4, 9, 14);
  }
  // The subkey is the first and last rows of the state, without the feed-forward addition.
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) out.writeUInt32LE(x[i]! >>> 0, 4 * i);
  for (let i = 0; i < 4; i++) out.writeUInt32LE(x[12 + i]! >>> 0, 16 + 4 * i);
  return new Uint8Array(out.buffer, out.byteOffset, 32);
}
