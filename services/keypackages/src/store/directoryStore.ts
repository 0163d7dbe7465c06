import { KEY_ROTATIONS_PER_ACCOUNT, LIMITS } from "@mastodon-mls/protocol";

// The directory's storage contract. Two implementations pass one shared contract suite: the in-memory
// embedded default and Redis. Everything of one account lives together (one Redis Cluster slot), so every
// operation below touches exactly one account and can be atomic.

/** A registered device of an account of this instance. */
export interface DeviceRecord {
  /** `user@domain`, canonical. */
  acct: string;
  /** base64url SHA-256 of the signature key (as in URLs). */
  deviceId: string;
  /** The device certificate bytes, signed by the account key; verified before it reaches the store. */
  certificate: Uint8Array;
  /** The device's MLS signature key, from the certificate. */
  sigKey: Uint8Array;
  /** Seconds since the Unix epoch of the first registration; kept when the certificate is replaced. */
  registeredAt: number;
}

export type PutDeviceResult =
  | "created"
  /** The same certificate was already registered. */
  | "unchanged"
  /** A new certificate for the same device (same signature key) replaced the old one. */
  | "replaced"
  /** The account already has the maximum number of devices. */
  | "device_limit"
  /** The device id is registered with another signature key (only a hash collision or a bug gets here). */
  | "key_mismatch"
  /** The account's device list is no longer the version the caller checked against: check again. */
  | "list_changed";

/** An account's signed device list as stored (verified before it reaches the store). */
export interface StoredDeviceList {
  /** The signed list bytes, exactly as uploaded. */
  list: Uint8Array;
  version: number;
  /** Account-key continuity statements, oldest first, at most `rotationsPerAccount`. */
  rotations: Uint8Array[];
}

/**
 * One atomic replacement of an account's device list (compare-and-set). It happens only while the stored
 * version is still `expectedVersion` and the registrations are still exactly `seen`, the state the
 * caller verified the new list and chose `remove` against; otherwise nothing changes ("changed").
 */
export interface DeviceListReplacement {
  /** The stored version the caller checked against; 0 when the account had no list. */
  expectedVersion: number;
  list: Uint8Array;
  /** Higher than `expectedVersion`: a stored list is never rolled back. */
  version: number;
  /** A continuity statement to append (the oldest is dropped beyond the cap). */
  rotation?: Uint8Array | undefined;
  /** Every registration the caller saw: device id and certificate. */
  seen: readonly { deviceId: string; certificate: Uint8Array }[];
  /** Registrations removed in the same step, with every KeyPackage of those devices. */
  remove: readonly string[];
}

export type PutDeviceListResult = "ok" | "changed";

/** Guards a registration or an upload by the list version it was checked against (0: no list). */
export interface ListGuard {
  listVersion?: number;
}

/** A verified KeyPackage, as stored. */
export interface StoredKeyPackage {
  /** base64url KeyPackageRef: the idempotency key of an upload. */
  ref: string;
  /** MLSMessage(KeyPackage) bytes, exactly as uploaded. */
  keyPackage: Uint8Array;
  /**
   * The earlier of the leaf's not_after and its device certificate's, seconds since the Unix epoch: never
   * served at or after it.
   */
  notAfter: number;
}

export interface KeyPackageUpload {
  keyPackages: readonly StoredKeyPackage[];
  /** Replaces the device's last-resort KeyPackage. */
  lastResort?: StoredKeyPackage | undefined;
}

export interface KeyPackageStock {
  /** Ordinary KeyPackages left that have not expired. */
  count: number;
  /** Whether an unexpired last-resort KeyPackage is held. */
  lastResort: boolean;
}

export type AddKeyPackagesResult =
  | (KeyPackageStock & {
      ok: true;
      /** KeyPackages of this upload that were not held before (a changed last-resort one counts). */
      stored: number;
    })
  | { ok: false; reason: "unknown_device" | "key_package_limit" | "list_changed" };

export interface ClaimedKeyPackage {
  keyPackage: Uint8Array;
  lastResort: boolean;
  /** The same requester claimed this device within the memo window and gets the same KeyPackage again. */
  replayed: boolean;
}

export interface ClaimOptions {
  /**
   * Hand out the last-resort KeyPackage even when ordinary ones are left: the target account's claim
   * budget is spent (README "Rate limits"). A remembered answer is still repeated.
   */
  lastResortOnly?: boolean;
}

/** One claim of one account (`POST /v1/claims` does one per local account it names). */
export interface AccountClaim {
  /** The requesting device's id when it is one of this account's: it is never handed its own KeyPackage. */
  excludeDeviceId?: string | undefined;
  /** Requester device and claim id, as for `claim`. */
  memoKey: string | undefined;
  now: number;
  /** An account without a device list has nothing to claim (DEVICE_LIST_REQUIRED, D7). */
  listRequired: boolean;
  /**
   * The claims naming this account spent its `target` budget for the window (README "Rate limits",
   * counted by the caller): its devices hand out last-resort KeyPackages only (a memo is still repeated).
   */
  overBudget?: boolean | undefined;
}

/** A claimed KeyPackage as it is served: base64url, as the store keeps it. */
export interface ServedKeyPackage {
  keyPackage: string;
  lastResort: boolean;
  replayed: boolean;
}

export type AccountClaimResult =
  | { status: "no_devices" }
  | {
      status: "ok";
      /** Oldest registration first, the requester's own device left out; undefined: nothing left. */
      devices: { deviceId: string; claimed: ServedKeyPackage | undefined }[];
    };

/** See DirectoryStore.claimTargets. */
export type ClaimTargets = "no_devices" | number;

/** What a sweep found still stored after purging everything expired. */
export interface StoreStats {
  /** Unexpired ordinary KeyPackages, all devices together. */
  keyPackages: number;
  /** Devices holding an unexpired last-resort KeyPackage. */
  lastResort: number;
  /** Expired KeyPackages this sweep removed (ordinary and last-resort). */
  purged: number;
}

export interface DirectoryStore {
  /** With `guard.listVersion`: only while the account's list version is that one ("list_changed"). */
  putDevice(device: DeviceRecord, guard?: ListGuard): Promise<PutDeviceResult>;
  getDevice(acct: string, deviceId: string): Promise<DeviceRecord | undefined>;
  /** Oldest registration first. */
  listDevices(acct: string): Promise<DeviceRecord[]>;
  /**
   * Adds ordinary KeyPackages (idempotent by ref; a ref already handed out is never taken back) and
   * optionally replaces the last-resort one. All or nothing: over the per-device cap, nothing is stored.
   */
  addKeyPackages(
    acct: string,
    deviceId: string,
    upload: KeyPackageUpload,
    now: number,
    guard?: ListGuard,
  ): Promise<AddKeyPackagesResult>;
  countKeyPackages(acct: string, deviceId: string, now: number): Promise<KeyPackageStock>;
  /**
   * One atomic step: the memo under `memoKey` for this device if it is still fresh, else one ordinary
   * KeyPackage that has not expired (removed for good; skipped with `lastResortOnly`), else the
   * last-resort one (kept), else undefined. With a `memoKey` (requester device and claim id) the answer
   * is remembered for the memo window; without one nothing is remembered and every claim is fresh.
   */
  claim(
    acct: string,
    deviceId: string,
    memoKey: string | undefined,
    now: number,
    options?: ClaimOptions,
  ): Promise<ClaimedKeyPackage | undefined>;
  /**
   * One atomic step: the account's registered devices (none: "no_devices") and `claim` for each device
   * but the requester's (`lastResortOnly` when `overBudget`). What `POST /v1/claims` does per local account, in one
   * round trip to the store.
   */
  claimAccount(acct: string, claim: AccountClaim): Promise<AccountClaimResult>;
  /**
   * What `claimAccount` would find, taking nothing: "no_devices" as it would say it, else how many
   * devices other than the requester's it would claim from. Claims count the account's `target` budget
   * only when that is more than 0 (README "Rate limits").
   */
  claimTargets(
    acct: string,
    claim: Pick<AccountClaim, "excludeDeviceId" | "listRequired">,
  ): Promise<ClaimTargets>;
  /** The account's current device list and continuity statements; undefined before its first list. */
  getDeviceList(acct: string): Promise<StoredDeviceList | undefined>;
  /**
   * Replaces the account's device list, appends the continuity statement and removes the registrations
   * (and KeyPackages) in `remove`, all in one atomic step, or changes nothing (see DeviceListReplacement).
   */
  putDeviceList(acct: string, replacement: DeviceListReplacement): Promise<PutDeviceListResult>;
  /**
   * Removes every expired KeyPackage (ordinary, spent refs, last-resort, memos) of every device and
   * counts what is left. Expired ones are never served either way; this bounds storage.
   */
  sweep(now: number): Promise<StoreStats>;
  /** True when the backend answers. */
  ready(): Promise<boolean>;
}

export interface StoreLimits {
  devicesPerAccount: number;
  keyPackagesPerDevice: number;
  /** How long a claim is remembered for its requester (DESIGN §5: 10 minutes). */
  claimMemoSeconds: number;
  /** Continuity statements kept per account; the oldest is dropped beyond it. */
  rotationsPerAccount: number;
}

export const DEFAULT_STORE_LIMITS: StoreLimits = {
  devicesPerAccount: LIMITS.devicesPerAccount,
  keyPackagesPerDevice: LIMITS.keyPackagesPerDevice,
  claimMemoSeconds: 600,
  rotationsPerAccount: KEY_ROTATIONS_PER_ACCOUNT,
};
