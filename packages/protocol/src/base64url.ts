import { ProtocolError } from "./errors.js";

const ALPHABET = /^[A-Za-z0-9_-]*$/;

export function toBase64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

/**
 * Strict base64url: unpadded, URL alphabet only, canonical (the last character carries no stray bits).
 * Node's decoder silently skips junk, so a lenient decode would let two strings name the same bytes.
 */
export function fromBase64url(text: string, maxBytes = Number.POSITIVE_INFINITY): Uint8Array {
  if (!ALPHABET.test(text) || text.length % 4 === 1) {
    throw new ProtocolError("invalid_encoding");
  }
  if (Math.floor((text.length * 3) / 4) > maxBytes) {
    throw new ProtocolError("payload_too_large");
  }
  const buf = Buffer.from(text, "base64url");
  if (buf.toString("base64url") !== text) {
    throw new ProtocolError("invalid_encoding", "A field is not canonical base64url.");
  }
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function isBase64url(text: string): boolean {
  try {
    fromBase64url(text);
    return true;
  } catch {
    return false;
  }
}
