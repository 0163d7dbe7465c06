import { createHash } from "node:crypto";
import { CIPHERSUITE_NAME } from "@mastodon-mls/protocol";
import { getCiphersuiteFromName, getCiphersuiteImpl, type CiphersuiteImpl } from "ts-mls";
import { ed25519Sign, ed25519Verify } from "./ed25519.js";
import { TlsWriter } from "./tls.js";

let tsMlsPromise: Promise<CiphersuiteImpl> | undefined;
let suitePromise: Promise<CiphersuiteImpl> | undefined;

/** ts-mls's own implementation of our ciphersuite, as it comes: for tests and the benchmark's raw side. */
export function tsMlsCipherSuite(): Promise<CiphersuiteImpl> {
  tsMlsPromise ??= getCiphersuiteImpl(getCiphersuiteFromName(CIPHERSUITE_NAME));
  return tsMlsPromise;
}

/**
 * The one ciphersuite of our MLS profile (DESIGN §2), created once per process: ts-mls's, with its
 * Ed25519 signing and verification done by ed25519.ts. ts-mls's default imports the key into WebCrypto
 * on every call: 0.71 ms for a signature here, against 0.05 ms with the key object kept
 * (docs/decisions.md D14). Same algorithm, same bytes; key generation stays ts-mls's.
 */
export function cipherSuite(): Promise<CiphersuiteImpl> {
  suitePromise ??= tsMlsCipherSuite().then((impl) => ({
    ...impl,
    signature: {
      sign: (signKey, message) => Promise.resolve().then(() => ed25519Sign(signKey, message)),
      verify: (publicKey, message, signature) =>
        Promise.resolve(ed25519Verify(publicKey, message, signature)),
      keygen: () => impl.signature.keygen(),
    },
  }));
  return suitePromise;
}

/** OpenSSL's SHA-256: every signed request hashes its body, and clients hash whole group states. */
export function sha256(bytes: Uint8Array): Uint8Array {
  // A copy, not a view: callers may hand `.buffer` on, and a Buffer can be a slice of a shared pool.
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

export interface SigningKeyPair {
  publicKey: Uint8Array;
  signKey: Uint8Array;
}

export async function generateSigningKeyPair(): Promise<SigningKeyPair> {
  return (await cipherSuite()).signature.keygen();
}

/** The bytes SignWithLabel signs (RFC 9420 §5.1.2): `struct { opaque label<V>; opaque content<V>; }`. */
function signContent(label: string, content: Uint8Array): Uint8Array {
  return new TlsWriter().string(`MLS 1.0 ${label}`).opaque(content).finish();
}

/** MLS SignWithLabel (RFC 9420 §5.1.2) with our ciphersuite's Ed25519. */
export async function signLabeled(
  signKey: Uint8Array,
  label: string,
  content: Uint8Array,
): Promise<Uint8Array> {
  return ed25519Sign(signKey, signContent(label, content));
}

/** MLS VerifyWithLabel; false for any malformed key or signature. */
export async function verifyLabeled(
  publicKey: Uint8Array,
  label: string,
  content: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  return ed25519Verify(publicKey, signContent(label, content), signature);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
