import {
  CIPHERSUITE_NAME,
  DEVICE_CERT_EXTENSION_TYPE,
  LAST_RESORT_EXTENSION_TYPE,
  LIMITS,
  MAX_KEYPACKAGE_LIFETIME_SECONDS,
  ProtocolError,
  toBase64url,
} from "@mastodon-mls/protocol";
import {
  decodeMlsMessage,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  type Extension,
  type KeyPackage,
  type LeafNode,
  type PrivateKeyPackage,
} from "ts-mls";
import { makeKeyPackageRef, verifyKeyPackage as mlsVerifyKeyPackage } from "ts-mls/keyPackage.js";
import { verifyLeafNodeSignatureKeyPackage } from "ts-mls/leafNode.js";
import { extensionTypeToNumber } from "ts-mls/extension.js";
import { bytesEqual, cipherSuite, type SigningKeyPair } from "./crypto.js";
import {
  decodeDeviceCertificate,
  verifyDeviceCertificate,
  type DeviceCertificate,
} from "./deviceCertificate.js";
import { basicCredential, credentialIdentity, profileCapabilities } from "./mlsProfile.js";

const CLOCK_SKEW_SECONDS = 300;

export interface GeneratedKeyPackage {
  publicPackage: KeyPackage;
  privatePackage: PrivateKeyPackage;
  /** MLSMessage(KeyPackage) bytes, as uploaded. */
  encoded: Uint8Array;
  /** base64url KeyPackageRef, the id a Welcome names it by. */
  ref: string;
}

export interface KeyPackageParams {
  identity: string;
  signatureKeyPair: SigningKeyPair;
  /** The device certificate bytes, carried in leaf extension 0xF0A1. */
  certificate: Uint8Array;
  lastResort?: boolean;
  lifetimeSeconds?: number;
  now?: number;
}

export async function generateDeviceKeyPackage(p: KeyPackageParams): Promise<GeneratedKeyPackage> {
  const cs = await cipherSuite();
  const now = p.now ?? Math.floor(Date.now() / 1000);
  const lifetime = Math.min(
    p.lifetimeSeconds ?? MAX_KEYPACKAGE_LIFETIME_SECONDS,
    MAX_KEYPACKAGE_LIFETIME_SECONDS,
  );
  const extensions: Extension[] = p.lastResort
    ? [{ extensionType: LAST_RESORT_EXTENSION_TYPE, extensionData: new Uint8Array(0) }]
    : [];
  const { publicPackage, privatePackage } = await generateKeyPackageWithKey(
    basicCredential(p.identity),
    profileCapabilities(),
    // notBefore a little in the past so a peer with a slow clock accepts it.
    { notBefore: BigInt(now - CLOCK_SKEW_SECONDS), notAfter: BigInt(now - CLOCK_SKEW_SECONDS + lifetime) },
    extensions,
    p.signatureKeyPair,
    cs,
    [{ extensionType: DEVICE_CERT_EXTENSION_TYPE, extensionData: p.certificate }],
  );
  const encoded = encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_key_package",
    keyPackage: publicPackage,
  });
  return { publicPackage, privatePackage, encoded, ref: await keyPackageRef(publicPackage) };
}

export async function keyPackageRef(kp: KeyPackage): Promise<string> {
  return toBase64url(await makeKeyPackageRef(kp, (await cipherSuite()).hash));
}

/** Decoded from untrusted bytes: framing checked, nothing else. */
export interface KeyPackageIn {
  keyPackage: KeyPackage;
  encoded: Uint8Array;
  readonly __in: "unverified";
}

export interface VerifiedKeyPackage {
  keyPackage: KeyPackage;
  encoded: Uint8Array;
  identity: string;
  /** `user@domain` */
  acct: string;
  sigKey: Uint8Array;
  deviceId: string;
  certificate: DeviceCertificate;
  lastResort: boolean;
  notAfter: number;
  ref: string;
}

const invalid = (why: string) =>
  new ProtocolError("invalid_key_package", `The KeyPackage is invalid: ${why}.`);

/** KP-1: an MLSMessage holding a KeyPackage, protocol mls10, and not one byte more. */
export function decodeKeyPackageMessage(bytes: Uint8Array): KeyPackageIn {
  if (bytes.byteLength > LIMITS.keyPackageBytes) throw invalid("too large");
  let decoded: ReturnType<typeof decodeMlsMessage>;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    throw invalid("truncated");
  }
  if (!decoded) throw invalid("not an MLSMessage");
  const [msg, consumed] = decoded;
  if (consumed !== bytes.byteLength) throw new ProtocolError("trailing_bytes");
  if (msg.version !== "mls10" || msg.wireformat !== "mls_key_package") throw invalid("not a KeyPackage");
  return { keyPackage: msg.keyPackage, encoded: bytes, __in: "unverified" };
}

/** The certificate extension of a leaf, verified offline. Throws `invalid_certificate`. */
export async function verifyLeafCertificate(
  leaf: LeafNode,
  now?: number,
  opts: { checkTimes?: boolean } = {},
): Promise<DeviceCertificate> {
  const exts = leaf.extensions.filter(
    (e) => extensionTypeToNumber(e.extensionType) === DEVICE_CERT_EXTENSION_TYPE,
  );
  if (exts.length !== 1) {
    throw new ProtocolError(
      "invalid_certificate",
      "The leaf carries no device certificate (or more than one).",
    );
  }
  if (!leaf.capabilities.extensions.includes(DEVICE_CERT_EXTENSION_TYPE)) {
    throw new ProtocolError("invalid_certificate", "The leaf does not list the certificate extension.");
  }
  const cert = await verifyDeviceCertificate(decodeDeviceCertificate(exts[0]!.extensionData), now, opts);
  const identity = credentialIdentity(leaf.credential);
  if (identity === undefined || identity !== cert.identity) {
    throw new ProtocolError(
      "invalid_certificate",
      "The certificate names another account than the credential.",
    );
  }
  if (!bytesEqual(cert.sigKey, leaf.signaturePublicKey)) {
    throw new ProtocolError("invalid_certificate", "The certificate is for another signature key.");
  }
  return cert;
}

/**
 * Every check a KeyPackage must pass before anyone stores it or adds it to a group (rules KP-2..KP-8 in
 * docs/protocol.md). Whether the account key is the account's real key is the bridge lookup's job.
 */
/**
 * KP-9, SCR-17: a leaf's capabilities list version mls10, our ciphersuite and the basic credential type.
 * ts-mls 1.6.4 refuses every Add (and every Welcome) to a group one of whose leaves does not list the
 * credential type the others use, so a leaf without them, whether added or made by a member's own
 * update path or Update, shuts the group to newcomers for good.
 */
export function supportsProfile(caps: KeyPackage["leafNode"]["capabilities"]): boolean {
  return (
    caps.versions.includes("mls10") &&
    caps.ciphersuites.includes(CIPHERSUITE_NAME) &&
    caps.credentials.includes("basic")
  );
}

export interface VerifyKeyPackageOptions {
  /**
   * Check the lifetime (KP-6) and the certificate's validity period (default true). Only a member that
   * processes someone else's commit later turns this off: time passing must not make a valid commit fail.
   */
  checkTimes?: boolean;
}

export async function verifyKeyPackage(
  kpIn: KeyPackageIn,
  now = Math.floor(Date.now() / 1000),
  opts: VerifyKeyPackageOptions = {},
): Promise<VerifiedKeyPackage> {
  const kp = kpIn.keyPackage;
  const cs = await cipherSuite();
  const checkTimes = opts.checkTimes ?? true;
  if (kp.version !== "mls10") throw invalid("the KeyPackage is not for MLS 1.0"); // KP-1
  if (kp.cipherSuite !== CIPHERSUITE_NAME) throw new ProtocolError("unsupported_ciphersuite"); // KP-2
  // KP-9: a leaf that does not support what every member uses makes ts-mls refuse every later Welcome.
  if (!supportsProfile(kp.leafNode.capabilities)) {
    throw invalid("its capabilities do not list mls10, our ciphersuite and basic credentials");
  }
  const identity = credentialIdentity(kp.leafNode.credential);
  if (identity === undefined) throw invalid("the credential is not a canonical basic acct: identity"); // KP-3
  if (!(await mlsVerifyKeyPackage(kp, cs.signature))) throw new ProtocolError("invalid_signature"); // KP-4
  if (!(await verifyLeafNodeSignatureKeyPackage(kp.leafNode, cs.signature))) {
    throw new ProtocolError("invalid_signature", "The KeyPackage's leaf node signature does not verify.");
  }
  if (bytesEqual(kp.initKey, kp.leafNode.hpkePublicKey))
    throw invalid("init_key equals the leaf's encryption key"); // KP-5
  const { notBefore, notAfter } = kp.leafNode.lifetime; // KP-6
  const nb = Number(notBefore);
  const na = Number(notAfter);
  if (na <= nb || na - nb > MAX_KEYPACKAGE_LIFETIME_SECONDS) throw new ProtocolError("lifetime_invalid");
  if (checkTimes && (nb > now + CLOCK_SKEW_SECONDS || na < now)) throw new ProtocolError("lifetime_invalid");
  const certificate = await verifyLeafCertificate(kp.leafNode, now, { checkTimes }); // KP-7
  const lastResort = kp.extensions.some(
    (e) => extensionTypeToNumber(e.extensionType) === LAST_RESORT_EXTENSION_TYPE,
  ); // KP-8
  return {
    keyPackage: kp,
    encoded: kpIn.encoded,
    identity,
    acct: certificate.acct,
    sigKey: kp.leafNode.signaturePublicKey,
    deviceId: certificate.deviceIdText,
    certificate,
    lastResort,
    notAfter: na,
    ref: await keyPackageRef(kp),
  };
}

export async function parseKeyPackage(bytes: Uint8Array, now?: number): Promise<VerifiedKeyPackage> {
  return verifyKeyPackage(decodeKeyPackageMessage(bytes), now);
}
