import type { MLSMessage, PrivateMessage } from "ts-mls";

/** What a PrivateMessage decodes to: the MLSMessage ts-mls would give for the same bytes. */
export type PrivateMlsMessage = Extract<MLSMessage, { wireformat: "mls_private_message" }>;

/** The outcome of reading a PrivateMessage: the message, or why ts-mls would not have decoded it. */
export type PrivateMessageRead =
  { ok: true; msg: PrivateMlsMessage; consumed: number } | { ok: false; reason: "malformed" | "not_mls" };

const CONTENT_TYPES = [undefined, "application", "proposal", "commit"] as const;

/**
 * True when `bytes` start as an mls10 PrivateMessage (protocol version 1, wire format 2): the one shape
 * `readPrivateMessage` reads. Everything else goes to ts-mls's own decoder.
 */
export function looksPrivate(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 1 && bytes[2] === 0 && bytes[3] === 2;
}

/**
 * Reads an mls10 PrivateMessage (RFC 9420 §6.3.1) exactly as ts-mls 1.6.4's `decodeMlsMessage` does,
 * byte for byte and refusal for refusal (privateMessage.test.ts compares the two on real and mutated
 * messages). The hub decodes every application message it accepts, and ts-mls's generic decoder spends
 * most of that time building closures and enum tables; this reads the six fields in one pass.
 *
 * ts-mls's rules, kept as they are: variable-length sizes of 1, 2 or 4 bytes, not required minimal (an
 * 8-byte size is refused as malformed: ts-mls throws); an unknown content type is "not an MLSMessage"
 * (ts-mls returns nothing); fields are views into `bytes`, not copies. Only call it when `looksPrivate`.
 */
export function readPrivateMessage(bytes: Uint8Array): PrivateMessageRead {
  let at = 4;
  let end = varLenEnd(bytes, at);
  if (end < 0) return { ok: false, reason: "malformed" };
  const groupId = bytes.subarray(varLenStart(bytes, at), end);
  at = end;
  // ts-mls reads the epoch and content type without throwing: too few bytes there is "not an MLSMessage".
  if (at + 9 > bytes.length) return { ok: false, reason: "not_mls" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const epoch = view.getBigUint64(at);
  const contentType = CONTENT_TYPES[bytes[at + 8]!];
  at += 9;
  if (contentType === undefined) return { ok: false, reason: "not_mls" };
  const fields: Uint8Array[] = [];
  for (let i = 0; i < 3; i++) {
    end = varLenEnd(bytes, at);
    if (end < 0) return { ok: false, reason: "malformed" };
    fields.push(bytes.subarray(varLenStart(bytes, at), end));
    at = end;
  }
  const [authenticatedData, encryptedSenderData, ciphertext] = fields as [Uint8Array, Uint8Array, Uint8Array];
  const privateMessage: PrivateMessage = {
    groupId,
    epoch,
    contentType,
    authenticatedData,
    encryptedSenderData,
    ciphertext,
  };
  return {
    ok: true,
    msg: { wireformat: "mls_private_message", privateMessage, version: "mls10" },
    consumed: at,
  };
}

/**
 * Where the variable-length field at `at` ends (RFC 9420 §2.1.2: a size of 1, 2 or 4 bytes, then that
 * many bytes), or -1 where ts-mls throws: no byte at `at`, a size cut short, an 8-byte size, or a field
 * longer than what is left.
 */
function varLenEnd(bytes: Uint8Array, at: number): number {
  if (at >= bytes.length) return -1;
  const first = bytes[at]!;
  const prefix = first >> 6;
  let length: number;
  if (prefix === 0) {
    length = first & 0x3f;
  } else if (prefix === 1) {
    if (at + 2 > bytes.length) return -1;
    length = ((first & 0x3f) << 8) | bytes[at + 1]!;
  } else if (prefix === 2) {
    if (at + 4 > bytes.length) return -1;
    // At most 2^30 - 1: the top bits are the prefix, so the shift cannot reach the sign bit.
    length = ((first & 0x3f) << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!;
  } else {
    return -1;
  }
  const end = at + (1 << prefix) + length;
  return end > bytes.length ? -1 : end;
}

/** Where the bytes of the well-formed variable-length field at `at` start. */
function varLenStart(bytes: Uint8Array, at: number): number {
  return at + (1 << (bytes[at]! >> 6));
}
