import {
  DEVICE_LIST_MAX_BYTES,
  DEVICE_NAME_MAX_BYTES,
  LABEL_DEVICE_LIST,
  LIMITS,
  MAX_DEVICE_LIST_VERSION,
  ProtocolError,
  formatAcct,
  parseCanonicalIdentity,
  toBase64url,
} from "@mastodon-mls/protocol";
import { bytesEqual, signLabeled, verifyLabeled, type SigningKeyPair } from "./crypto.js";
import { deviceIdOf } from "./deviceCertificate.js";
import { CLOCK_SKEW_SECONDS, decodeEnvelope, encodeEnvelope, nowSeconds, safeU64 } from "./signedEnvelope.js";
import { TlsDecodeError, TlsReader, TlsWriter } from "./tls.js";

/**
 * DESIGN §3 device list, signed by the account key (docs/identity.md §2.2):
 *
 *   struct {
 *     opaque device_id<V>;        // SHA-256(sig_key), 32 bytes
 *     opaque sig_key<V>;          // the device's MLS signature key, 32 bytes
 *     opaque name<V>;             // UTF-8, at most 64 bytes, for people
 *     uint64 added_at;            // seconds since the Unix epoch
 *   } DeviceEntry;
 *   struct {
 *     opaque acct<V>;             // UTF-8 "acct:user@domain", canonical
 *     opaque account_key<V>;      // the Ed25519 key that signs this list, 32 bytes
 *     uint64 version;             // 1, 2, 3 … one more on every change
 *     DeviceEntry devices<V>;
 *     uint64 issued_at;
 *   } DeviceListTBS;
 *   struct { opaque tbs<V>; opaque signature<V>; } DeviceList;
 *
 * `account_key` is an addition to DESIGN §3 (docs/identity.md, decision I1): it makes a list verifiable
 * on its own, even when the account has no device left, and lets the directory check a list without
 * guessing the key from certificates.
 */
export interface DeviceEntry {
  deviceId: Uint8Array;
  sigKey: Uint8Array;
  name: string;
  addedAt: number;
}

export interface DeviceListTbs {
  identity: string;
  accountKey: Uint8Array;
  version: number;
  devices: DeviceEntry[];
  issuedAt: number;
}

/** Decoded from untrusted bytes: structurally sound, nothing else checked. */
export interface DeviceListIn extends DeviceListTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  readonly __in: "unverified";
}

/** Only `verifyDeviceList` makes one. */
export interface DeviceList extends DeviceListTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  /** `user@domain` */
  readonly acct: string;
  readonly __verified: true;
}

const invalid = (why: string) =>
  new ProtocolError("invalid_device_list", `The device list is invalid: ${why}.`);

export function encodeDeviceListTbs(tbs: DeviceListTbs): Uint8Array {
  return new TlsWriter()
    .string(tbs.identity)
    .opaque(tbs.accountKey)
    .u64(tbs.version)
    .vector(tbs.devices, (w, d) => w.opaque(d.deviceId).opaque(d.sigKey).string(d.name).u64(d.addedAt))
    .u64(tbs.issuedAt)
    .finish();
}

/** DL-1: framing, lengths and no trailing bytes. */
export function decodeDeviceList(bytes: Uint8Array): DeviceListIn {
  try {
    const { tbs, signature } = decodeEnvelope(bytes, DEVICE_LIST_MAX_BYTES);
    const r = new TlsReader(tbs);
    const list = {
      identity: r.string(LIMITS.acctLength + 5),
      accountKey: r.opaque(64),
      version: safeU64(r.u64()),
      devices: r.vector(DEVICE_LIST_MAX_BYTES, LIMITS.devicesPerAccount, (d) => ({
        deviceId: d.opaque(64),
        sigKey: d.opaque(64),
        name: d.string(DEVICE_NAME_MAX_BYTES),
        addedAt: safeU64(d.u64()),
      })),
      issuedAt: safeU64(r.u64()),
      signature,
      encoded: bytes,
      __in: "unverified" as const,
    };
    r.end();
    return list;
  } catch (e) {
    if (e instanceof TlsDecodeError) throw invalid(`malformed (${e.message})`);
    throw e;
  }
}

// Names are shown to people: control characters and bidirectional overrides could disguise one device
// as another in a list.
const UNSAFE_NAME_CHARS = "[\\p{Cc}\\u202a-\\u202e\\u2066-\\u2069]";
const UNSAFE_NAME = new RegExp(UNSAFE_NAME_CHARS, "u");

/** DL-7: whether a device name may appear in a list (no control characters or bidirectional overrides). */
export function isSafeDeviceName(name: string): boolean {
  return !UNSAFE_NAME.test(name);
}

/** `name` without the characters DL-7 refuses. */
export function stripUnsafeNameChars(name: string): string {
  return name.replace(new RegExp(UNSAFE_NAME_CHARS, "gu"), "");
}

/** DL-2…DL-7: everything about a list that needs no key. Throws `invalid_device_list`. */
export function checkDeviceListShape(tbs: DeviceListTbs): string {
  let acct = "";
  try {
    acct = formatAcct(parseCanonicalIdentity(tbs.identity)); // DL-2
  } catch {
    throw invalid("the acct is not canonical");
  }
  if (tbs.accountKey.byteLength !== 32) throw invalid("the account key is not 32 bytes"); // DL-3
  if (!Number.isInteger(tbs.version) || tbs.version < 1 || tbs.version > MAX_DEVICE_LIST_VERSION) {
    throw invalid(`the version is not between 1 and ${MAX_DEVICE_LIST_VERSION}`); // DL-4
  }
  if (tbs.devices.length > LIMITS.devicesPerAccount) {
    throw invalid(`more than ${LIMITS.devicesPerAccount} devices`); // DL-5
  }
  const seen = new Set<string>();
  for (const d of tbs.devices) {
    if (d.sigKey.byteLength !== 32) throw invalid("a signature key is not 32 bytes"); // DL-6
    if (!bytesEqual(d.deviceId, deviceIdOf(d.sigKey))) throw invalid("a device_id is not SHA-256(sig_key)");
    const id = toBase64url(d.deviceId);
    if (seen.has(id)) throw invalid("a device is listed twice");
    seen.add(id);
    if (new TextEncoder().encode(d.name).byteLength > DEVICE_NAME_MAX_BYTES || !isSafeDeviceName(d.name)) {
      throw invalid("a device name is too long or holds control characters"); // DL-7
    }
  }
  return acct;
}

/**
 * The checks of a list under a key the caller already trusts (the key the profile names, or the pinned
 * one). DL-8: `account_key` is that key and the signature verifies under it. DL-9: not issued in the future.
 */
export async function verifyDeviceList(
  list: DeviceListIn,
  accountKey: Uint8Array,
  now: number = nowSeconds(),
): Promise<DeviceList> {
  const acct = checkDeviceListShape(list);
  if (!bytesEqual(list.accountKey, accountKey)) throw invalid("it is signed by another account key"); // DL-8
  const ok = await verifyLabeled(accountKey, LABEL_DEVICE_LIST, encodeDeviceListTbs(list), list.signature);
  if (!ok) throw invalid("the account key's signature does not verify");
  if (list.issuedAt > now + CLOCK_SKEW_SECONDS) throw invalid("it is issued in the future"); // DL-9
  const { __in: _unverified, ...fields } = list;
  return { ...fields, acct, __verified: true };
}

export async function signDeviceList(tbs: DeviceListTbs, accountKey: SigningKeyPair): Promise<Uint8Array> {
  checkDeviceListShape(tbs);
  if (!bytesEqual(tbs.accountKey, accountKey.publicKey)) throw invalid("account_key is not the signing key");
  const encoded = encodeDeviceListTbs(tbs);
  return encodeEnvelope(encoded, await signLabeled(accountKey.signKey, LABEL_DEVICE_LIST, encoded));
}

export interface NewDevice {
  sigKey: Uint8Array;
  name: string;
}

/** Version 1 of an account's list, usually holding the first device. */
export async function createDeviceList(p: {
  identity: string;
  accountKey: SigningKeyPair;
  devices: readonly NewDevice[];
  now?: number;
}): Promise<Uint8Array> {
  const now = p.now ?? nowSeconds();
  return signDeviceList(
    {
      identity: p.identity,
      accountKey: p.accountKey.publicKey,
      version: 1,
      devices: p.devices.map((d) => entry(d, now)),
      issuedAt: now,
    },
    p.accountKey,
  );
}

function entry(d: NewDevice, now: number): DeviceEntry {
  return { deviceId: deviceIdOf(d.sigKey), sigKey: d.sigKey, name: d.name, addedAt: now };
}

/**
 * The next version of a list: `change` returns the new device set. Signing with another account key than
 * the current list's is how a rotated key takes over (the directory then wants a continuity statement).
 */
async function nextVersion(
  current: DeviceList,
  accountKey: SigningKeyPair,
  devices: DeviceEntry[],
  now: number,
): Promise<Uint8Array> {
  if (current.version >= MAX_DEVICE_LIST_VERSION) throw invalid("the version cannot grow any further");
  return signDeviceList(
    {
      identity: current.identity,
      accountKey: accountKey.publicKey,
      version: current.version + 1,
      devices,
      issuedAt: Math.max(now, current.issuedAt),
    },
    accountKey,
  );
}

export async function addDevice(
  current: DeviceList,
  device: NewDevice,
  accountKey: SigningKeyPair,
  now: number = nowSeconds(),
): Promise<Uint8Array> {
  if (current.devices.some((d) => bytesEqual(d.sigKey, device.sigKey)))
    throw invalid("a device is listed twice");
  return nextVersion(current, accountKey, [...current.devices, entry(device, now)], now);
}

/** Revoking is a new version without the device; the profile then names that version (DESIGN §3). */
export async function revokeDevice(
  current: DeviceList,
  deviceId: Uint8Array | string,
  accountKey: SigningKeyPair,
  now: number = nowSeconds(),
): Promise<Uint8Array> {
  const id = typeof deviceId === "string" ? deviceId : toBase64url(deviceId);
  const remaining = current.devices.filter((d) => toBase64url(d.deviceId) !== id);
  if (remaining.length === current.devices.length) throw invalid("no such device in the list");
  return nextVersion(current, accountKey, remaining, now);
}

/** Re-signs the same devices under a new account key, as one new version (account-key rotation). */
export async function reissueDeviceList(
  current: DeviceList,
  newAccountKey: SigningKeyPair,
  now: number = nowSeconds(),
): Promise<Uint8Array> {
  return nextVersion(current, newAccountKey, current.devices, now);
}

export function findDevice(list: DeviceList, deviceId: Uint8Array): DeviceEntry | undefined {
  return list.devices.find((d) => bytesEqual(d.deviceId, deviceId));
}

/**
 * DL-10, for whoever stores lists (the directory on PUT): a new list replaces the stored one only with a
 * higher version for the same acct. A change of account key is allowed only with a continuity chain, which
 * the caller checks (`verifyRotationChain`); `keyChanged` tells it to.
 */
export function checkDeviceListSuccessor(
  stored: DeviceList | undefined,
  next: DeviceList,
): { keyChanged: boolean } {
  if (stored === undefined) return { keyChanged: false };
  if (stored.identity !== next.identity) throw invalid("it is for another account");
  if (next.version <= stored.version) {
    throw new ProtocolError(
      "stale_device_list",
      `The device list's version ${next.version} is not newer than the stored ${stored.version}.`,
    );
  }
  return { keyChanged: !bytesEqual(stored.accountKey, next.accountKey) };
}
