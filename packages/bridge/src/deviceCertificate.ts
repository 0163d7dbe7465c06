import {
  LABEL_DEVICE_CERT,
  LIMITS,
  ProtocolError,
  SIGNATURE_SCHEME_ED25519,
  formatAcct,
  parseCanonicalIdentity,
  toBase64url,
} from "@mastodon-mls/protocol";
import { bytesEqual, sha256, signLabeled, verifyLabeled } from "./crypto.js";
import { TlsDecodeError, TlsReader, TlsWriter } from "./tls.js";

/**
 * DESIGN §3 device certificate, signed by the account key:
 *
 *   struct {
 *     opaque acct<V>;              // UTF-8 "acct:user@domain", canonical
 *     opaque account_key<V>;       // Ed25519 public key, 32 bytes
 *     opaque device_id<V>;         // SHA-256(sig_key), 32 bytes
 *     uint16 signature_scheme;     // 0x0807 ed25519
 *     opaque sig_key<V>;           // the device's MLS signature key, 32 bytes
 *     uint64 not_before;           // seconds since the Unix epoch
 *     uint64 not_after;
 *   } DeviceCertificateTBS;
 *   struct { DeviceCertificateTBS tbs; opaque signature<V>; } DeviceCertificate;
 */
export interface DeviceCertificateTbs {
  identity: string;
  accountKey: Uint8Array;
  deviceId: Uint8Array;
  signatureScheme: number;
  sigKey: Uint8Array;
  notBefore: number;
  notAfter: number;
}

/** Decoded from untrusted bytes: structurally sound, nothing else checked. */
export interface DeviceCertificateIn extends DeviceCertificateTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  readonly __in: "unverified";
}

/** Only `verifyDeviceCertificate` makes one. */
export interface DeviceCertificate extends DeviceCertificateTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  /** `user@domain` */
  readonly acct: string;
  /** base64url of `deviceId`, as in URLs. */
  readonly deviceIdText: string;
  readonly __verified: true;
}

/** A device certificate is renewed by re-linking; a year bounds the damage of a lost device key. */
export const MAX_CERTIFICATE_VALIDITY_SECONDS = 400 * 24 * 3600;
const CLOCK_SKEW_SECONDS = 300;

export function encodeDeviceCertificateTbs(tbs: DeviceCertificateTbs): Uint8Array {
  return new TlsWriter()
    .string(tbs.identity)
    .opaque(tbs.accountKey)
    .opaque(tbs.deviceId)
    .u16(tbs.signatureScheme)
    .opaque(tbs.sigKey)
    .u64(tbs.notBefore)
    .u64(tbs.notAfter)
    .finish();
}

export function deviceIdOf(sigKey: Uint8Array): Uint8Array {
  return sha256(sigKey);
}

export function deviceIdText(sigKey: Uint8Array): string {
  return toBase64url(deviceIdOf(sigKey));
}

export async function signDeviceCertificate(
  fields: Omit<DeviceCertificateTbs, "deviceId" | "signatureScheme">,
  accountSignKey: Uint8Array,
): Promise<Uint8Array> {
  const tbs: DeviceCertificateTbs = {
    ...fields,
    deviceId: deviceIdOf(fields.sigKey),
    signatureScheme: SIGNATURE_SCHEME_ED25519,
  };
  const encodedTbs = encodeDeviceCertificateTbs(tbs);
  const signature = await signLabeled(accountSignKey, LABEL_DEVICE_CERT, encodedTbs);
  return new TlsWriter().opaque(encodedTbs).opaque(signature).finish();
}

function safeNumber(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TlsDecodeError("timestamp out of range");
  return Number(v);
}

/** CERT-1: framing, lengths and no trailing bytes. */
export function decodeDeviceCertificate(bytes: Uint8Array): DeviceCertificateIn {
  try {
    if (bytes.byteLength > LIMITS.certificateBytes) throw new TlsDecodeError("too long");
    const outer = new TlsReader(bytes);
    const tbsBytes = outer.opaque(LIMITS.certificateBytes);
    const signature = outer.opaque(128);
    outer.end();
    const r = new TlsReader(tbsBytes);
    const cert = {
      identity: r.string(LIMITS.acctLength + 5),
      accountKey: r.opaque(64),
      deviceId: r.opaque(64),
      signatureScheme: r.u16(),
      sigKey: r.opaque(64),
      notBefore: safeNumber(r.u64()),
      notAfter: safeNumber(r.u64()),
      signature,
      encoded: bytes,
      __in: "unverified" as const,
    };
    r.end();
    return cert;
  } catch (e) {
    if (e instanceof TlsDecodeError) {
      throw new ProtocolError("invalid_certificate", `The device certificate is malformed: ${e.message}.`);
    }
    throw e;
  }
}

/**
 * The offline checks of a certificate (DESIGN §3). Whether `accountKey` really is the account's key is
 * a separate question, answered by the profile proof and pinning.
 */
export async function verifyDeviceCertificate(
  cert: DeviceCertificateIn,
  now: number = Math.floor(Date.now() / 1000),
  opts: { checkTimes?: boolean } = {},
): Promise<DeviceCertificate> {
  const fail = (why: string): never => {
    throw new ProtocolError("invalid_certificate", `The device certificate is invalid: ${why}.`);
  };
  let acct = "";
  try {
    acct = formatAcct(parseCanonicalIdentity(cert.identity)); // CERT-2
  } catch {
    fail("the acct is not canonical");
  }
  if (cert.accountKey.byteLength !== 32 || cert.sigKey.byteLength !== 32) fail("a key has the wrong length"); // CERT-3
  if (cert.signatureScheme !== SIGNATURE_SCHEME_ED25519) fail("unsupported signature scheme"); // CERT-4
  if (!bytesEqual(cert.deviceId, deviceIdOf(cert.sigKey))) fail("device_id is not SHA-256(sig_key)"); // CERT-5
  if (cert.notAfter <= cert.notBefore || cert.notAfter - cert.notBefore > MAX_CERTIFICATE_VALIDITY_SECONDS) {
    fail("the validity period is empty or too long"); // CERT-6
  }
  if (opts.checkTimes ?? true) checkCertificateTimes(cert, now);
  const ok = await verifyLabeled(
    cert.accountKey,
    LABEL_DEVICE_CERT,
    encodeDeviceCertificateTbs(cert),
    cert.signature,
  );
  if (!ok) fail("the account key's signature does not verify"); // CERT-7
  const { __in: _unverified, ...fields } = cert;
  return { ...fields, acct, deviceIdText: toBase64url(cert.deviceId), __verified: true };
}

/** CERT-6, the part that depends on the clock: checked on every use, also of a cached certificate. */
export function checkCertificateTimes(cert: { notBefore: number; notAfter: number }, now: number): void {
  if (now + CLOCK_SKEW_SECONDS < cert.notBefore) {
    throw new ProtocolError("invalid_certificate", "The device certificate is invalid: not valid yet.");
  }
  if (now > cert.notAfter)
    throw new ProtocolError("invalid_certificate", "The device certificate is invalid: expired.");
}

export async function parseDeviceCertificate(bytes: Uint8Array, now?: number): Promise<DeviceCertificate> {
  return verifyDeviceCertificate(decodeDeviceCertificate(bytes), now);
}
