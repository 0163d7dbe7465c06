import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { LruCache } from "./lruCache.js";

// Ed25519 through Node's own crypto with imported keys cached. ts-mls's default provider imports the key
// into WebCrypto on every call, which was most of a service's CPU per signed request (bench/directory).
// Same algorithm (RFC 8032), same bytes: tests check both directions against ts-mls.

const SPKI_PREFIX = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);
const PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
/**
 * Imported keys by their bytes, least recently used out: two a device (its own, its account's), for the
 * devices that keep signing requests. Each also holds OpenSSL memory outside the V8 heap.
 */
const MAX_CACHED = 4096;

class KeyCache {
  private readonly keys = new LruCache<string, KeyObject>(MAX_CACHED);

  get(bytes: Uint8Array, make: () => KeyObject): KeyObject {
    return this.keys.getOrSet(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"),
      make,
    );
  }
}

const publicKeys = new KeyCache();
const privateKeys = new KeyCache();

function concat(a: Uint8Array, b: Uint8Array): Buffer {
  return Buffer.concat([a, b]);
}

/** False for a malformed key or signature, never an exception. */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.byteLength !== 32 || signature.byteLength !== 64) return false;
  try {
    const key = publicKeys.get(publicKey, () =>
      createPublicKey({ key: concat(SPKI_PREFIX, publicKey), format: "der", type: "spki" }),
    );
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

/** Signs with a key as ts-mls generates it: PKCS#8 DER, or the raw 32-byte seed. */
export function ed25519Sign(signKey: Uint8Array, message: Uint8Array): Uint8Array {
  const key = privateKeys.get(signKey, () =>
    createPrivateKey({
      key: signKey.byteLength === 32 ? concat(PKCS8_PREFIX, signKey) : Buffer.from(signKey),
      format: "der",
      type: "pkcs8",
    }),
  );
  return new Uint8Array(sign(null, message, key));
}
