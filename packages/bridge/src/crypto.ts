import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { CIPHERSUITE_NAME } from "@mastodon-mls/protocol";
import { getCiphersuiteFromName, getCiphersuiteImpl, type CiphersuiteImpl } from "ts-mls";
import { signWithLabel, verifyWithLabel } from "ts-mls/crypto/signature.js";

let suitePromise: Promise<CiphersuiteImpl> | undefined;

/** The one ciphersuite of our MLS profile (DESIGN §2), created once per process. */
export function cipherSuite(): Promise<CiphersuiteImpl> {
  suitePromise ??= getCiphersuiteImpl(getCiphersuiteFromName(CIPHERSUITE_NAME));
  return suitePromise;
}

export function sha256(bytes: Uint8Array): Uint8Array {
  return nobleSha256(bytes);
}

export interface SigningKeyPair {
  publicKey: Uint8Array;
  signKey: Uint8Array;
}

export async function generateSigningKeyPair(): Promise<SigningKeyPair> {
  return (await cipherSuite()).signature.keygen();
}

/** MLS SignWithLabel (RFC 9420 §5.1.2) with our ciphersuite's Ed25519. */
export async function signLabeled(
  signKey: Uint8Array,
  label: string,
  content: Uint8Array,
): Promise<Uint8Array> {
  return signWithLabel(signKey, label, content, (await cipherSuite()).signature);
}

export async function verifyLabeled(
  publicKey: Uint8Array,
  label: string,
  content: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (publicKey.byteLength !== 32 || signature.byteLength !== 64) return false;
  try {
    return await verifyWithLabel(publicKey, label, content, signature, (await cipherSuite()).signature);
  } catch {
    // A malformed point is a failed verification, not a crash.
    return false;
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
