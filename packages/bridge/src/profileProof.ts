import {
  LABEL_PROFILE_PROOF,
  MAX_DEVICE_LIST_VERSION,
  PROFILE_FIELD_PATTERN,
  ProtocolError,
  formatAcct,
  fromBase64url,
  parseCanonicalIdentity,
  toBase64url,
} from "@mastodon-mls/protocol";
import { bytesEqual, sha256, signLabeled, verifyLabeled, type SigningKeyPair } from "./crypto.js";
import { TlsWriter } from "./tls.js";

/**
 * DESIGN §3 profile proof, signed by the account key (docs/identity.md §2.3):
 *
 *   struct {
 *     opaque acct<V>;                 // UTF-8 "acct:user@domain", canonical
 *     opaque account_key_hash<V>;     // SHA-256(account_key), 32 bytes
 *     uint64 device_list_version;
 *   } ProfileProofTBS;
 *
 * Only the signature travels, in the profile field `MLS` = `mls1.<fp>.<ver>.<sig>`; the acct is the
 * account whose profile holds it, so a proof copied onto another account does not verify.
 */
export interface ProfileProofIn {
  /** SHA-256 of the account key. */
  readonly fingerprint: Uint8Array;
  readonly deviceListVersion: number;
  readonly signature: Uint8Array;
  readonly __in: "unverified";
}

/** Only `verifyProfileProof` makes one. */
export interface ProfileProof {
  readonly acct: string;
  readonly identity: string;
  readonly accountKey: Uint8Array;
  readonly fingerprint: Uint8Array;
  readonly deviceListVersion: number;
  readonly signature: Uint8Array;
  readonly __verified: true;
}

export function encodeProfileProofTbs(
  identity: string,
  fingerprint: Uint8Array,
  version: number,
): Uint8Array {
  return new TlsWriter().string(identity).opaque(fingerprint).u64(version).finish();
}

/** base64url SHA-256 of an account key: the `fp` of the profile field, 43 characters. */
export function accountKeyFingerprint(accountKey: Uint8Array): string {
  return toBase64url(sha256(accountKey));
}

const invalid = (why: string) =>
  new ProtocolError("invalid_profile_proof", `The profile proof is invalid: ${why}.`);

function checkVersion(version: number): void {
  if (!Number.isInteger(version) || version < 1 || version > MAX_DEVICE_LIST_VERSION) {
    throw invalid(`the device-list version is not between 1 and ${MAX_DEVICE_LIST_VERSION}`);
  }
}

/** The value of the `MLS` profile field for this account key and device-list version. */
export async function buildProfileFieldValue(p: {
  identity: string;
  accountKey: SigningKeyPair;
  deviceListVersion: number;
}): Promise<string> {
  parseCanonicalIdentity(p.identity);
  checkVersion(p.deviceListVersion);
  const fp = sha256(p.accountKey.publicKey);
  const sig = await signLabeled(
    p.accountKey.signKey,
    LABEL_PROFILE_PROOF,
    encodeProfileProofTbs(p.identity, fp, p.deviceListVersion),
  );
  return formatProfileFieldValue({ fingerprint: fp, deviceListVersion: p.deviceListVersion, signature: sig });
}

export function formatProfileFieldValue(p: {
  fingerprint: Uint8Array;
  deviceListVersion: number;
  signature: Uint8Array;
}): string {
  return `mls1.${toBase64url(p.fingerprint)}.${p.deviceListVersion}.${toBase64url(p.signature)}`;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

/**
 * Field values come back from Mastodon as HTML (TextFormatter): PF-1 strips tags and decodes entities
 * before anything is matched. Tags are removed outright: a link's visible and invisible spans together
 * hold the original text.
 */
export function fieldValueText(html: string): string {
  return (
    html
      // `[^<>]`, not `[^>]`: from each `<` the scan stops at the next one, so a run of `<` without `>` costs
      // linear time, not quadratic (a hostile instance's field of 250,000 `<` took 25 s).
      .replace(/<[^<>]*>/g, "")
      .replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]+);/gi, (whole, name: string) => {
        if (name[0] === "#") {
          const code =
            name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
          return code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff)
            ? String.fromCodePoint(code)
            : whole;
        }
        return ENTITIES[name.toLowerCase()] ?? whole;
      })
      .trim()
  );
}

/**
 * PF-2…PF-4: parses a field value, raw or as Mastodon renders it. Throws `invalid_profile_proof` for
 * anything but `mls1.<43>.<1-10 digits>.<86>` in canonical base64url and decimal.
 */
export function parseProfileFieldValue(value: string): ProfileProofIn {
  if (value.length > 4096) throw invalid("the value is too long");
  const text = fieldValueText(value);
  if (!PROFILE_FIELD_PATTERN.test(text)) throw invalid("the value is not mls1.<fp>.<ver>.<sig>"); // PF-2
  const [, fp, ver, sig] = text.split(".") as [string, string, string, string];
  if (ver.length > 1 && ver.startsWith("0")) throw invalid("the version has leading zeros"); // PF-3
  const deviceListVersion = Number(ver);
  checkVersion(deviceListVersion);
  try {
    // PF-4: canonical base64url, so one proof has exactly one spelling.
    return {
      fingerprint: fromBase64url(fp),
      deviceListVersion,
      signature: fromBase64url(sig),
      __in: "unverified",
    };
  } catch {
    throw invalid("the fingerprint or signature is not canonical base64url");
  }
}

/**
 * PP-1: the fingerprint is SHA-256 of `accountKey` (a key the caller took from the directory's list, a
 * certificate or a pin). PP-2: the signature verifies under it over this account's acct and the version.
 */
export async function verifyProfileProof(
  proof: ProfileProofIn,
  identity: string,
  accountKey: Uint8Array,
): Promise<ProfileProof> {
  const acct = formatAcct(parseCanonicalIdentity(identity));
  if (!bytesEqual(proof.fingerprint, sha256(accountKey))) {
    throw invalid("its fingerprint is not the account key's"); // PP-1
  }
  const ok = await verifyLabeled(
    accountKey,
    LABEL_PROFILE_PROOF,
    encodeProfileProofTbs(identity, proof.fingerprint, proof.deviceListVersion),
    proof.signature,
  );
  if (!ok) throw invalid("the account key's signature does not verify for this account"); // PP-2
  const { __in: _unverified, ...fields } = proof;
  return { ...fields, acct, identity, accountKey, __verified: true };
}
