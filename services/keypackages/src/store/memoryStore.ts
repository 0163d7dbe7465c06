import { bytesEqual } from "@mastodon-mls/bridge";
import {
  DEFAULT_STORE_LIMITS,
  type AddKeyPackagesResult,
  type ClaimOptions,
  type ClaimedKeyPackage,
  type DeviceRecord,
  type DirectoryStore,
  type KeyPackageStock,
  type KeyPackageUpload,
  type PutDeviceResult,
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

  async putDevice(device: DeviceRecord): Promise<PutDeviceResult> {
    const account = this.accountFor(device.acct);
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
  ): Promise<AddKeyPackagesResult> {
    const account = this.accounts.get(acct);
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
    const stock = account?.stock.get(deviceId);
    if (!stock) return undefined;
    prune(stock, now);
    const memo = memoKey === undefined ? undefined : stock.memos.get(memoKey);
    if (memo) {
      return { keyPackage: memo.keyPackage.slice(), lastResort: memo.lastResort, replayed: true };
    }
    let picked: { kp: StoredKeyPackage; lastResort: boolean } | undefined;
    const next = options.lastResortOnly ? undefined : soonestToExpire(stock.pool);
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
    return { keyPackage: picked.kp.keyPackage.slice(), lastResort: picked.lastResort, replayed: false };
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
      account = { devices: new Map(), stock: new Map() };
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

function copyKeyPackage(kp: StoredKeyPackage): StoredKeyPackage {
  return { ...kp, keyPackage: kp.keyPackage.slice() };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
