import { randomBytes } from "node:crypto";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";

// XChaCha20-Poly1305 with a random 24-byte nonce per message: safe for any number of messages under one
// key (the nonce space is large enough for random nonces), which is how the store uses it.

export const NONCE_BYTES = 24;

export interface Sealed {
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Sealed {
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  return { nonce, ciphertext: sealWithNonce(key, nonce, plaintext, aad) };
}

export function sealWithNonce(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** The plaintext, or undefined when the key, nonce, associated data or ciphertext is not the one sealed. */
export function open(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array | undefined {
  if (nonce.byteLength !== NONCE_BYTES) return undefined;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(ciphertext);
  } catch {
    return undefined;
  }
}
