import { bytesEqual } from "@mastodon-mls/bridge";
import { toBase64url } from "@mastodon-mls/protocol";
import {
  DEFAULT_STORE_LIMITS,
  type AccountClaim,
  type AccountClaimResult,
  type AddKeyPackagesResult,
  type ClaimOptions,
  type ClaimTargets,
  type ClaimedKeyPackage,
  type DeviceListReplacement,
  type DeviceRecord,
  type DirectoryStore,
  type KeyPackageStock,
  type KeyPackageUpload,
  type ListGuard,
  type PutDeviceListResult,
  type PutDeviceResult,
  type StoredDeviceList,
  type StoreLimits,
  type StoreStats,
  type StoredKeyPackage,
} from "./directoryStore.js";

interface Memo {
  keyPackage: Uint8Array;
  lastResort: boolean;
  notAfter: number;
  until: number;
}

interface DeviceStock {
  /** ref → KeyPackage, ordinary ones not handed out yet. */
  pool: Map<string, StoredKeyPackage>;
  /** ref → not_after of KeyPackages already handed out, so a re-upload cannot serve them twice. */
  spent: Map<string, number>;
  lastResort: StoredKeyPackage | undefined;
  /** requester device id → what it was given. */
  memos: Map<string, Memo>;
}

interface Account {
  devices: Map<string, DeviceRecord>;
  stock: Map<string, DeviceStock>;
  deviceList: StoredDeviceList | undefined;
}

/**
 * The embedded default. Every method runs to completion without awaiting, so each is atomic on Node's
 * single thread, as the Redis scripts are atomic on the server.
 */
export class MemoryDirectoryStore implements DirectoryStore {
  private readonly accounts = new Map<string, Account>();
  private readonly limits: StoreLimits;

  constructor(limits: Partial<StoreLimits> = {}) {
    this.limits = { ...DEFAULT_STORE_LIMITS, ...limits };
  }

  async putDevice(device: DeviceRecord, guard: ListGuard = {}): Promise<PutDeviceResult> {
    const account = this.accountFor(device.acct);
    if (!listIs(account, guard)) return "list_changed";
    const current = account.devices.get(device.deviceId);
    if (current) {
      if (!bytesEqual(current.sigKey, device.sigKey)) return "key_mismatch";
      if (bytesEqual(current.certificate, device.certificate)) return "unchanged";
      account.devices.set(device.deviceId, { ...copyDevice(device), registeredAt: current.registeredAt });
      return "replaced";
    }
    if (account.devices.size >= this.limits.devicesPerAccount) return "device_limit";
    account.devices.set(device.deviceId, copyDevice(device));
    return "created";
  }

  async getDevice(acct: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const found = this.accounts.get(acct)?.devices.get(deviceId);
    return found ? copyDevice(found) : undefined;
  }

  async listDevices(acct: string): Promise<DeviceRecord[]> {
    const devices = [...(this.accounts.get(acct)?.devices.values() ?? [])].map(copyDevice);
    return devices.sort((a, b) => a.registeredAt - b.registeredAt || compare(a.deviceId, b.deviceId));
  }

  async addKeyPackages(
    acct: string,
    deviceId: string,
    upload: KeyPackageUpload,
    now: number,
    guard: ListGuard = {},
  ): Promise<AddKeyPackagesResult> {
    const account = this.accounts.get(acct);
    if (account === undefined ? (guard.listVersion ?? 0) !== 0 : !listIs(account, guard)) {
      return { ok: false, reason: "list_changed" };
    }
    if (!account?.devices.has(deviceId)) return { ok: false, reason: "unknown_device" };
    const stock = this.stock(account, deviceId);
    prune(stock, now);
    const fresh = new Map<string, StoredKeyPackage>();
    for (const kp of upload.keyPackages) {
      if (!stock.pool.has(kp.ref) && !stock.spent.has(kp.ref) && kp.notAfter > now) fresh.set(kp.ref, kp);
    }
    if (stock.pool.size + fresh.size > this.limits.keyPackagesPerDevice) {
      return { ok: false, reason: "key_package_limit" };
    }
    for (const [ref, kp] of fresh) stock.pool.set(ref, copyKeyPackage(kp));
    let stored = fresh.size;
    if (upload.lastResort && upload.lastResort.ref !== stock.lastResort?.ref) {
      stock.lastResort = copyKeyPackage(upload.lastResort);
      stored += 1;
    }
    return { ok: true, stored, ...stockOf(stock, now) };
  }

  async countKeyPackages(acct: string, deviceId: string, now: number): Promise<KeyPackageStock> {
    const account = this.accounts.get(acct);
    const stock = account?.stock.get(deviceId);
    if (!stock) return { count: 0, lastResort: false };
    prune(stock, now);
    return stockOf(stock, now);
  }

  async claim(
    acct: string,
    deviceId: string,
    memoKey: string | undefined,
    now: number,
    options: ClaimOptions = {},
  ): Promise<ClaimedKeyPackage | undefined> {
    const account = this.accounts.get(acct);
    const picked = account && this.claimNow(account, deviceId, memoKey, now, options.lastResortOnly ?? false);
    return picked && { ...picked, keyPackage: picked.keyPackage.slice() };
  }

  async claimTargets(
    acct: string,
    claim: Pick<AccountClaim, "excludeDeviceId" | "listRequired">,
  ): Promise<ClaimTargets> {
    const account = this.accounts.get(acct);
    if (!account || account.devices.size === 0 || (claim.listRequired && !account.deviceList)) {
      return "no_devices";
    }
    const excluded = claim.excludeDeviceId !== undefined && account.devices.has(claim.excludeDeviceId);
    return account.devices.size - (excluded ? 1 : 0);
  }

  async claimAccount(acct: string, claim: AccountClaim): Promise<AccountClaimResult> {
    const account = this.accounts.get(acct);
    if (!account || account.devices.size === 0 || (claim.listRequired && !account.deviceList)) {
      return { status: "no_devices" };
    }
    const targets = [...account.devices.values()]
      .filter((d) => d.deviceId !== claim.excludeDeviceId)
      .sort((a, b) => a.registeredAt - b.registeredAt || compare(a.deviceId, b.deviceId));
    const lastResortOnly = claim.overBudget ?? false;
    return {
      status: "ok",
      devices: targets.map(({ deviceId }) => {
        const picked = this.claimNow(account, deviceId, claim.memoKey, claim.now, lastResortOnly);
        return {
          deviceId,
          claimed: picked && { ...picked, keyPackage: toBase64url(picked.keyPackage) },
        };
      }),
    };
  }

  /** One device's claim (see DirectoryStore.claim); the KeyPackage returned is the stored one, not a copy. */
  private claimNow(
    account: Account,
    deviceId: string,
    memoKey: string | undefined,
    now: number,
    lastResortOnly: boolean,
  ): ClaimedKeyPackage | undefined {
    const stock = account.stock.get(deviceId);
    if (!stock) return undefined;
    prune(stock, now);
    const memo = memoKey === undefined ? undefined : stock.memos.get(memoKey);
    if (memo) return { keyPackage: memo.keyPackage, lastResort: memo.lastResort, replayed: true };
    let picked: { kp: StoredKeyPackage; lastResort: boolean } | undefined;
    const next = lastResortOnly ? undefined : soonestToExpire(stock.pool);
    if (next) {
      stock.pool.delete(next.ref);
      stock.spent.set(next.ref, next.notAfter);
      picked = { kp: next, lastResort: false };
    } else if (stock.lastResort && stock.lastResort.notAfter > now) {
      picked = { kp: stock.lastResort, lastResort: true };
    }
    if (!picked) return undefined;
    if (memoKey !== undefined)
      stock.memos.set(memoKey, {
        keyPackage: picked.kp.keyPackage,
        lastResort: picked.lastResort,
        notAfter: picked.kp.notAfter,
        until: now + this.limits.claimMemoSeconds,
      });
    return { keyPackage: picked.kp.keyPackage, lastResort: picked.lastResort, replayed: false };
  }

  async getDeviceList(acct: string): Promise<StoredDeviceList | undefined> {
    const stored = this.accounts.get(acct)?.deviceList;
    return stored && copyDeviceList(stored);
  }

  async putDeviceList(acct: string, r: DeviceListReplacement): Promise<PutDeviceListResult> {
    const account = this.accountFor(acct);
    const current = account.deviceList?.version ?? 0;
    if (current !== r.expectedVersion || r.version <= current) return "changed";
    // The registrations must be exactly those the caller decided on.
    if (account.devices.size !== r.seen.length) return "changed";
    for (const { deviceId, certificate } of r.seen) {
      const registered = account.devices.get(deviceId);
      if (!registered || !bytesEqual(registered.certificate, certificate)) return "changed";
    }
    const rotations = account.deviceList?.rotations ?? [];
    account.deviceList = {
      list: r.list.slice(),
      version: r.version,
      rotations: (r.rotation ? [...rotations, r.rotation.slice()] : rotations).slice(
        -this.limits.rotationsPerAccount,
      ),
    };
    for (const deviceId of r.remove) {
      account.devices.delete(deviceId);
      // Its KeyPackages go at once; the spent refs and memos stay until they expire, as in Redis.
      const stock = account.stock.get(deviceId);
      if (stock) {
        stock.pool.clear();
        stock.lastResort = undefined;
      }
    }
    return "ok";
  }

  async sweep(now: number): Promise<StoreStats> {
    const stats: StoreStats = { keyPackages: 0, lastResort: 0, purged: 0 };
    for (const account of this.accounts.values()) {
      for (const [deviceId, stock] of account.stock) {
        stats.purged += prune(stock, now);
        stats.keyPackages += stock.pool.size;
        if (stock.lastResort) stats.lastResort += 1;
        const empty =
          stock.pool.size === 0 && stock.spent.size === 0 && !stock.lastResort && stock.memos.size === 0;
        if (empty) account.stock.delete(deviceId);
      }
    }
    return stats;
  }

  async ready(): Promise<boolean> {
    return true;
  }

  private accountFor(acct: string): Account {
    let account = this.accounts.get(acct);
    if (!account) {
      account = { devices: new Map(), stock: new Map(), deviceList: undefined };
      this.accounts.set(acct, account);
    }
    return account;
  }

  private stock(account: Account, deviceId: string): DeviceStock {
    let stock = account.stock.get(deviceId);
    if (!stock) {
      stock = { pool: new Map(), spent: new Map(), lastResort: undefined, memos: new Map() };
      account.stock.set(deviceId, stock);
    }
    return stock;
  }
}

/**
 * Expired KeyPackages are dropped, never served; expired memos and spent refs are forgotten, and so is
 * an expired last-resort KeyPackage. Returns how many KeyPackages (ordinary and last-resort) it dropped.
 */
function prune(stock: DeviceStock, now: number): number {
  let dropped = 0;
  for (const [ref, kp] of stock.pool) {
    if (kp.notAfter <= now) {
      stock.pool.delete(ref);
      dropped += 1;
    }
  }
  if (stock.lastResort && stock.lastResort.notAfter <= now) {
    stock.lastResort = undefined;
    dropped += 1;
  }
  for (const [ref, notAfter] of stock.spent) if (notAfter <= now) stock.spent.delete(ref);
  for (const [requester, memo] of stock.memos) {
    if (memo.until <= now || memo.notAfter <= now) stock.memos.delete(requester);
  }
  return dropped;
}

/** Same order as the Redis sorted set: by not_after, then by ref. */
function soonestToExpire(pool: Map<string, StoredKeyPackage>): StoredKeyPackage | undefined {
  let best: StoredKeyPackage | undefined;
  for (const kp of pool.values()) {
    if (!best || kp.notAfter < best.notAfter || (kp.notAfter === best.notAfter && kp.ref < best.ref))
      best = kp;
  }
  return best;
}

function stockOf(stock: DeviceStock, now: number): KeyPackageStock {
  return {
    count: stock.pool.size,
    lastResort: stock.lastResort !== undefined && stock.lastResort.notAfter > now,
  };
}

function copyDevice(d: DeviceRecord): DeviceRecord {
  return { ...d, certificate: d.certificate.slice(), sigKey: d.sigKey.slice() };
}

/** The account's list is still the version a guarded write was checked against. */
function listIs(account: Account, guard: ListGuard): boolean {
  return guard.listVersion === undefined || (account.deviceList?.version ?? 0) === guard.listVersion;
}

function copyDeviceList(d: StoredDeviceList): StoredDeviceList {
  return { list: d.list.slice(), version: d.version, rotations: d.rotations.map((r) => r.slice()) };
}

function copyKeyPackage(kp: StoredKeyPackage): StoredKeyPackage {
  return { ...kp, keyPackage: kp.keyPackage.slice() };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
