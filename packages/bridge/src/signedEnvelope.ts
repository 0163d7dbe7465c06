import { TlsDecodeError, TlsReader, TlsWriter } from "./tls.js";

// Every signed object of the identity layer travels as `struct { opaque tbs<V>; opaque signature<V>; }`,
// as the device certificate does, so a decoder can check the framing before it reads a single field.

export function encodeEnvelope(tbs: Uint8Array, signature: Uint8Array): Uint8Array {
  return new TlsWriter().opaque(tbs).opaque(signature).finish();
}

export function decodeEnvelope(
  bytes: Uint8Array,
  maxBytes: number,
): { tbs: Uint8Array; signature: Uint8Array } {
  if (bytes.byteLength > maxBytes) throw new TlsDecodeError("too long");
  const r = new TlsReader(bytes);
  const tbs = r.opaque(maxBytes);
  const signature = r.opaque(128);
  r.end();
  return { tbs, signature };
}

/** A uint64 that must fit a JavaScript number (timestamps, versions). */
export function safeU64(v: bigint, max = Number.MAX_SAFE_INTEGER): number {
  if (v > BigInt(max)) throw new TlsDecodeError("integer out of range");
  return Number(v);
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** Clocks of honest peers disagree by minutes; this much "from the future" is tolerated. */
export const CLOCK_SKEW_SECONDS = 300;
