import { TlsDecodeError, TlsReader, TlsWriter, deviceIdText, isSafeDeviceName } from "@mastodon-mls/bridge";
import { LIMITS, canonicalAcct, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { createHash } from "node:crypto";
import { ClientError } from "../errors.js";

// The link code (docs/protocol.md "Linking a device", LNK-1…6): what a new device shows — as text and as
// a QR code — so that a device holding the account key can certify it. It carries the new device's public
// signature key, so it needs no secrecy, only integrity: the confirmation code, derived from all of it,
// is shown on both devices and typed on the approving one. A code altered on its way (a mis-scan, a
// substituted key) gives another confirmation code.

/** The text form starts with this (and says which format follows). */
export const LINK_CODE_PREFIX = "MLSDM-LINK1-";
/** A code is approved within this long of its making (LNK-4): a photo of an old screen is worthless. */
export const LINK_CODE_MAX_AGE_SECONDS = 3600;
const CLOCK_SKEW_SECONDS = 300;
const NAME_MAX_BYTES = 64;
// v2: stretched (LNK-10); a v1 device shows other digits, so mixing versions is refused, never misread.
const LABEL = new TextEncoder().encode("mastodon-mls link v2");
/**
 * LNK-10: chained SHA-256 rounds after the labelled hash. A substitute code may vary its name (zero-width
 * characters look the same), its time and its key at will, so 12 digits alone fall to ~2^40 hashes —
 * minutes on one GPU; 2^15 rounds make that ~2^55, at ~40 ms once per code on each device.
 */
const CONFIRMATION_ROUNDS = 2 ** 15;
/** 4 + 32-byte key + acct + name: anything longer is not a link code. */
const PAYLOAD_MAX_BYTES = 8 + 2 + LIMITS.acctLength + 2 + 32 + 2 + NAME_MAX_BYTES + 16;

export interface LinkRequestTbs {
  /** `user@domain` */
  acct: string;
  /** The new device's Ed25519 public signature key. */
  sigKey: Uint8Array;
  /** The new device's name, as its owner typed it. */
  name: string;
  /** Unix seconds. */
  createdAt: number;
}

/** Decoded from a code someone typed or scanned: structurally sound, nothing else checked. */
export interface LinkRequestIn extends LinkRequestTbs {
  readonly __in: "unverified";
}

/** Only `verifyLinkRequest` makes one. */
export interface LinkRequest extends LinkRequestTbs {
  /** base64url SHA-256 of `sigKey`, as in device lists and URLs. */
  readonly deviceId: string;
  /** The code both devices show (LNK-5). */
  readonly confirmation: string;
  readonly __verified: true;
}

function payloadOf(r: LinkRequestTbs): Uint8Array {
  return new TlsWriter().u64(r.createdAt).string(r.acct).opaque(r.sigKey).string(r.name).finish();
}

/** The text form: prefix + base64url of the payload. Upper-case-insensitive parts only in the prefix. */
export function encodeLinkCode(r: LinkRequestTbs): string {
  return LINK_CODE_PREFIX + toBase64url(payloadOf(r));
}

const bad = (why: string): ClientError =>
  new ClientError(
    "bad_link_code",
    `This is not a valid link code: ${why}. Copy it again from the new device.`,
  );

/** LNK-1, LNK-2: the text decodes to exactly one payload, within limits; whitespace from copying ignored. */
export function decodeLinkCode(text: string): LinkRequestIn {
  if (text.length > 4 * PAYLOAD_MAX_BYTES) throw bad("it is far too long");
  const compact = text.replace(/\s+/g, "");
  if (!compact.toUpperCase().startsWith(LINK_CODE_PREFIX)) {
    throw bad(`it does not start with ${LINK_CODE_PREFIX}`);
  }
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(compact.slice(LINK_CODE_PREFIX.length), PAYLOAD_MAX_BYTES);
  } catch {
    throw bad("it is damaged (not base64url, or too long)");
  }
  try {
    const r = new TlsReader(bytes);
    const createdAt = r.u64();
    const acct = r.string(LIMITS.acctLength);
    const sigKey = r.opaque(32);
    const name = r.string(NAME_MAX_BYTES);
    r.end();
    if (createdAt > BigInt(Number.MAX_SAFE_INTEGER)) throw bad("its time is out of range");
    return { acct, sigKey, name, createdAt: Number(createdAt), __in: "unverified" };
  } catch (e) {
    if (e instanceof TlsDecodeError) throw bad(`it is truncated or damaged (${e.message})`);
    throw e;
  }
}

/**
 * 12 digits from SHA-256 over a label and the whole payload, stretched by CONFIRMATION_ROUNDS chained
 * SHA-256 (LNK-10), as `1234-5678-9012` (LNK-5). About 40 bits of digits plus 15 of work: a substitute
 * code giving the same digits takes ~2^55 hashes within the code's hour.
 */
export function confirmationCode(r: LinkRequestTbs): string {
  let digest = createHash("sha256").update(LABEL).update(payloadOf(r)).digest();
  for (let i = 0; i < CONFIRMATION_ROUNDS; i++) digest = createHash("sha256").update(digest).digest();
  const n = digest.readBigUInt64BE(0);
  const digits = (n % 10n ** 12n).toString().padStart(12, "0");
  return `${digits.slice(0, 4)}-${digits.slice(4, 8)}-${digits.slice(8)}`;
}

/** Digits only, so `1234 5678 9012` or `123456789012` typed back match. */
export function sameConfirmation(a: string, b: string): boolean {
  const digits = (s: string) => s.replace(/[\s-]/g, "");
  return /^\d{12}$/.test(digits(a)) && digits(a) === digits(b);
}

/**
 * LNK-3…LNK-5: the code is for `acct` (the approving device's own account), its key is 32 bytes, its name
 * is printable, and it is at most an hour old (and not from the future beyond clock skew).
 */
export function verifyLinkRequest(r: LinkRequestIn, acct: string, now: number): LinkRequest {
  let named: string;
  try {
    named = canonicalAcct(r.acct);
  } catch {
    throw bad("the account in it is not user@domain");
  }
  if (named !== r.acct) throw bad("the account in it is not in canonical form");
  if (named !== acct) {
    throw new ClientError(
      "bad_link_code",
      `The code is for ${named}, and this device is of ${acct}: link it from a device of ${named}.`,
    );
  }
  if (r.sigKey.byteLength !== 32) throw bad("the device key in it has the wrong length");
  if (r.name === "" || !isSafeDeviceName(r.name)) {
    throw bad("the device name in it is empty or has control characters");
  }
  if (r.createdAt > now + CLOCK_SKEW_SECONDS) throw bad("it was made in the future (check both clocks)");
  if (now - r.createdAt > LINK_CODE_MAX_AGE_SECONDS) {
    throw new ClientError(
      "bad_link_code",
      "The link code is more than an hour old. Run mls-dm link-device again on the new device for a new one.",
    );
  }
  const { __in: _unverified, ...fields } = r;
  return {
    ...fields,
    deviceId: deviceIdText(r.sigKey),
    confirmation: confirmationCode(r),
    __verified: true,
  };
}
