import { randomBytes } from "node:crypto";
import {
  AUTH_MAX_SKEW_SECONDS,
  AUTH_NONCE_TTL_SECONDS,
  AUTH_SCHEME,
  LABEL_REQUEST,
  LIMITS,
  ProtocolError,
  fromBase64url,
  toBase64url,
} from "@mastodon-mls/protocol";
import { LruCache } from "./lruCache.js";
import { sha256, signLabeled, verifyLabeled } from "./crypto.js";
import {
  checkCertificateTimes,
  decodeDeviceCertificate,
  verifyDeviceCertificate,
  type DeviceCertificate,
} from "./deviceCertificate.js";
import type { NonceStore } from "./nonceStore.js";
import { TlsWriter } from "./tls.js";

/**
 * DESIGN §7. The device signs, with SignWithLabel("mastodon-mls request v1"):
 *
 *   struct {
 *     opaque method<V>;        // upper-case, e.g. "POST"
 *     opaque origin<V>;        // the service's configured origin, e.g. "https://dm.example.social"
 *     opaque path<V>;          // path and query exactly as sent, e.g. "/v1/inbox?after=x"
 *     opaque body_hash<V>;     // SHA-256 of the body bytes (of the empty string when there is none)
 *     uint64 timestamp;        // seconds since the Unix epoch
 *     opaque nonce<V>;         // 16 random bytes
 *   } RequestTBS;
 *
 * Header: `Authorization: MLS-Device <certificate>.<timestamp>.<nonce>.<signature>`, the certificate,
 * nonce and signature base64url, the timestamp in decimal.
 */
export interface RequestTarget {
  method: string;
  origin: string;
  pathAndQuery: string;
  body?: Uint8Array | undefined;
}

export interface DeviceSigner {
  certificate: Uint8Array;
  signKey: Uint8Array;
}

const NONCE_BYTES = 16;

/** A service checks every request against its one configured origin: parsed once, not per request. */
let lastOrigin: { text: string; origin: string } | undefined;

export function normaliseOrigin(origin: string): string {
  if (lastOrigin?.text === origin) return lastOrigin.origin;
  const normalised = new URL(origin).origin;
  lastOrigin = { text: origin, origin: normalised };
  return normalised;
}

function requestTbs(t: RequestTarget, timestamp: number, nonce: Uint8Array): Uint8Array {
  return new TlsWriter()
    .string(t.method.toUpperCase())
    .string(normaliseOrigin(t.origin))
    .string(t.pathAndQuery)
    .opaque(sha256(t.body ?? new Uint8Array(0)))
    .u64(timestamp)
    .opaque(nonce)
    .finish();
}

export async function signRequest(
  signer: DeviceSigner,
  target: RequestTarget,
  now: number = Math.floor(Date.now() / 1000),
  nonce: Uint8Array = new Uint8Array(randomBytes(NONCE_BYTES)),
): Promise<string> {
  const signature = await signLabeled(signer.signKey, LABEL_REQUEST, requestTbs(target, now, nonce));
  return `${AUTH_SCHEME} ${toBase64url(signer.certificate)}.${now}.${toBase64url(nonce)}.${toBase64url(signature)}`;
}

/** The header split into its parts, nothing verified. */
export interface AuthorizationIn {
  certificate: Uint8Array;
  timestamp: number;
  nonce: Uint8Array;
  signature: Uint8Array;
}

/** REQ-1: the header's syntax. */
export function parseAuthorization(header: string | undefined): AuthorizationIn {
  const { certificate, certificateText, ...rest } = parseHeader(header, () => false);
  return { certificate: certificate ?? decodeCertificate(certificateText), ...rest };
}

const malformed = (why: string) =>
  new ProtocolError("auth_invalid", `The Authorization header is malformed: ${why}.`);

/**
 * The header's parts; the certificate is decoded only when `known` says its text is not one already
 * verified (decoding a certificate again that was decoded strictly before cannot fail).
 */
function parseHeader(
  header: string | undefined,
  known: (certificateText: string) => boolean,
): Omit<AuthorizationIn, "certificate"> & { certificate: Uint8Array | undefined; certificateText: string } {
  if (header === undefined || header === "") throw new ProtocolError("unauthorized");
  if (header.length > 8192) throw malformed("too long");
  const space = header.indexOf(" ");
  if (space < 0 || header.slice(0, space) !== AUTH_SCHEME) {
    throw malformed(`expected the ${AUTH_SCHEME} scheme`);
  }
  const parts = header.slice(space + 1).split(".");
  if (parts.length !== 4) throw malformed("expected four dot-separated parts");
  const [cert, ts, nonce, sig] = parts as [string, string, string, string];
  if (!/^[0-9]{1,15}$/.test(ts)) throw malformed("the timestamp is not a decimal number");
  try {
    const parsed = {
      certificateText: cert,
      certificate: known(cert) ? undefined : fromBase64url(cert, LIMITS.certificateBytes),
      timestamp: Number(ts),
      nonce: fromBase64url(nonce, 64),
      signature: fromBase64url(sig, 128),
    };
    if (parsed.nonce.byteLength !== NONCE_BYTES) throw malformed(`the nonce must be ${NONCE_BYTES} bytes`);
    return parsed;
  } catch (e) {
    if (e instanceof ProtocolError && e.code === "auth_invalid") throw e;
    throw malformed("a part is not base64url");
  }
}

function decodeCertificate(text: string): Uint8Array {
  try {
    return fromBase64url(text, LIMITS.certificateBytes);
  } catch {
    throw malformed("a part is not base64url");
  }
}

/**
 * Devices send the same certificate with every request, and checking its signature was half the cost of
 * a request. Verified certificates are remembered by the exact text they travel as (strict base64url, so
 * one text is one byte string), which also spares decoding them again. Bounded, least recently used out:
 * the devices that keep signing stay, and a hub holding tens of thousands of idle streams, each
 * authenticated once, does not keep a certificate (about 1.5 KiB with its text) for each. The
 * clock-dependent part of CERT-6 is checked again on every use.
 */
const verifiedCertificates = new LruCache<string, DeviceCertificate>(2048);

async function verifiedCertificate(
  text: string,
  bytes: Uint8Array | undefined,
  now: number,
): Promise<DeviceCertificate> {
  let cert = verifiedCertificates.get(text);
  if (cert === undefined) {
    const decoded = decodeDeviceCertificate(bytes ?? decodeCertificate(text));
    cert = await verifyDeviceCertificate(decoded, now, { checkTimes: false });
    verifiedCertificates.set(text, cert);
  }
  checkCertificateTimes(cert, now);
  return cert;
}

export interface VerifyRequestOptions {
  nonces: NonceStore;
  now?: number;
}

/**
 * Verifies a device-signed request against this service's own origin (from its config, never the Host
 * header). Order matters: everything that costs nothing to check comes first, the nonce is spent last,
 * so an attacker cannot burn another device's nonces with forged requests.
 */
export async function verifyRequest(
  header: string | undefined,
  target: RequestTarget,
  opts: VerifyRequestOptions,
): Promise<DeviceCertificate> {
  const auth = parseHeader(header, (text) => verifiedCertificates.has(text));
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - auth.timestamp) > AUTH_MAX_SKEW_SECONDS) throw new ProtocolError("auth_expired"); // REQ-2
  let cert: DeviceCertificate;
  try {
    cert = await verifiedCertificate(auth.certificateText, auth.certificate, now); // REQ-3
  } catch (e) {
    if (e instanceof ProtocolError) throw new ProtocolError("auth_invalid", e.message);
    throw e;
  }
  const ok = await verifyLabeled(
    cert.sigKey,
    LABEL_REQUEST,
    requestTbs(target, auth.timestamp, auth.nonce),
    auth.signature,
  );
  if (!ok) throw new ProtocolError("auth_invalid"); // REQ-4
  const fresh = await opts.nonces.claim(
    `${cert.deviceIdText}:${toBase64url(auth.nonce)}`,
    AUTH_NONCE_TTL_SECONDS,
    cert,
  );
  if (!fresh) throw new ProtocolError("auth_replayed"); // REQ-5
  return cert;
}
