import type { Redis } from "ioredis";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { redisReady } from "@mastodon-mls/service-kit";
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
  type ServedKeyPackage,
  type StoredDeviceList,
  type StoreLimits,
  type StoreStats,
} from "./directoryStore.js";
import { RedisKeys } from "./redisKeys.js";
import {
  addKeyPackagesScript,
  claimAccountScript,
  claimScript,
  claimTargetsScript,
  countScript,
  getDeviceListScript,
  putDeviceListScript,
  putDeviceScript,
  sweepDeviceScript,
  sweepLastResortScript,
} from "./redisScripts.js";

const PUT_RESULTS: ReadonlySet<string> = new Set<PutDeviceResult>([
  "created",
  "unchanged",
  "replaced",
  "device_limit",
  "key_mismatch",
  "list_changed",
]);

interface DeviceJson {
  certificate: string;
  sig_key: string;
  registered_at: number;
}

/** Bytes are stored as base64url text: that is how they travel, so a claim needs no conversion. */
export class RedisDirectoryStore implements DirectoryStore {
  private readonly keys: RedisKeys;
  private readonly limits: StoreLimits;

  /** The connection is the caller's: it is shared with the nonce store and closed by the service. */
  constructor(
    private readonly redis: Redis,
    prefix: string,
    limits: Partial<StoreLimits> = {},
  ) {
    this.keys = new RedisKeys(prefix);
    this.limits = { ...DEFAULT_STORE_LIMITS, ...limits };
  }

  async putDevice(device: DeviceRecord, guard: ListGuard = {}): Promise<PutDeviceResult> {
    const result = await putDeviceScript.run(
      this.redis,
      [this.keys.devices(device.acct), this.keys.deviceList(device.acct)],
      [
        device.deviceId,
        toBase64url(device.certificate),
        toBase64url(device.sigKey),
        device.registeredAt,
        this.limits.devicesPerAccount,
        guard.listVersion ?? "",
      ],
    );
    if (typeof result !== "string" || !PUT_RESULTS.has(result)) throw unexpected("putDevice", result);
    return result as PutDeviceResult;
  }

  async getDevice(acct: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const json = await this.redis.hget(this.keys.devices(acct), deviceId);
    return json === null ? undefined : decodeDevice(acct, deviceId, json);
  }

  async listDevices(acct: string): Promise<DeviceRecord[]> {
    const all = await this.redis.hgetall(this.keys.devices(acct));
    return Object.entries(all)
      .map(([deviceId, json]) => decodeDevice(acct, deviceId, json))
      .sort((a, b) => a.registeredAt - b.registeredAt || compare(a.deviceId, b.deviceId));
  }

  async addKeyPackages(
    acct: string,
    deviceId: string,
    upload: KeyPackageUpload,
    now: number,
    guard: ListGuard = {},
  ): Promise<AddKeyPackagesResult> {
    const args: (string | number)[] = [
      deviceId,
      now,
      this.limits.keyPackagesPerDevice,
      guard.listVersion ?? "",
      this.limits.claimMemoSeconds,
      upload.keyPackages.length,
    ];
    for (const kp of upload.keyPackages) args.push(kp.ref, kp.notAfter, toBase64url(kp.keyPackage));
    if (upload.lastResort) {
      const lr = upload.lastResort;
      args.push(lr.ref, lr.notAfter, toBase64url(lr.keyPackage));
    }
    const reply = await addKeyPackagesScript.run(
      this.redis,
      [
        this.keys.devices(acct),
        this.keys.pool(acct, deviceId),
        this.keys.keyPackages(acct, deviceId),
        this.keys.spent(acct, deviceId),
        this.keys.lastResort(acct, deviceId),
        this.keys.deviceList(acct),
        this.keys.retired(acct, deviceId),
      ],
      args,
    );
    if (!Array.isArray(reply)) throw unexpected("addKeyPackages", reply);
    const [status, stored, count, hasLastResort] = reply as unknown[];
    if (status === "unknown_device" || status === "key_package_limit" || status === "list_changed") {
      return { ok: false, reason: status };
    }
    if (status !== "ok" || typeof stored !== "number" || typeof count !== "number") {
      throw unexpected("addKeyPackages", reply);
    }
    return { ok: true, stored, count, lastResort: hasLastResort === 1 };
  }

  async countKeyPackages(acct: string, deviceId: string, now: number): Promise<KeyPackageStock> {
    const reply = await countScript.run(
      this.redis,
      [this.keys.pool(acct, deviceId), this.keys.lastResort(acct, deviceId)],
      [now],
    );
    if (!Array.isArray(reply) || typeof reply[0] !== "number") throw unexpected("countKeyPackages", reply);
    return { count: reply[0], lastResort: reply[1] === 1 };
  }

  async claim(
    acct: string,
    deviceId: string,
    memoKey: string | undefined,
    now: number,
    options: ClaimOptions = {},
  ): Promise<ClaimedKeyPackage | undefined> {
    const reply = await claimScript.run(
      this.redis,
      [
        this.keys.pool(acct, deviceId),
        this.keys.keyPackages(acct, deviceId),
        this.keys.spent(acct, deviceId),
        this.keys.lastResort(acct, deviceId),
        this.keys.retired(acct, deviceId),
        // Without a memo key the script neither reads nor writes a memo; it still needs a key of this slot.
        this.keys.memo(acct, deviceId, memoKey ?? "none"),
      ],
      [now, memoKey === undefined ? 0 : this.limits.claimMemoSeconds, options.lastResortOnly ? "1" : "0"],
    );
    if (reply === null) return undefined;
    if (!Array.isArray(reply) || typeof reply[0] !== "string") throw unexpected("claim", reply);
    return {
      keyPackage: fromBase64url(reply[0]),
      lastResort: reply[1] === "1",
      replayed: reply[2] === 1,
    };
  }

  async claimTargets(
    acct: string,
    claim: Pick<AccountClaim, "excludeDeviceId" | "listRequired">,
  ): Promise<ClaimTargets> {
    const reply = await claimTargetsScript.run(
      this.redis,
      [this.keys.devices(acct), this.keys.deviceList(acct)],
      [claim.excludeDeviceId ?? "", claim.listRequired ? "1" : "0"],
    );
    if (typeof reply !== "number") throw unexpected("claimTargets", reply);
    return reply < 0 ? "no_devices" : reply;
  }

  async claimAccount(acct: string, claim: AccountClaim): Promise<AccountClaimResult> {
    const reply = await claimAccountScript.run(
      this.redis,
      [this.keys.devices(acct), this.keys.deviceList(acct)],
      [
        this.keys.account(acct),
        claim.now,
        claim.memoKey === undefined ? 0 : this.limits.claimMemoSeconds,
        claim.memoKey ?? "",
        claim.excludeDeviceId ?? "",
        claim.listRequired ? "1" : "0",
        claim.overBudget ? "1" : "0",
      ],
    );
    if (!Array.isArray(reply)) throw unexpected("claimAccount", reply);
    if (reply[0] === "no_devices") return { status: "no_devices" };
    if (reply[0] !== "ok" || (reply.length - 1) % 5 !== 0) throw unexpected("claimAccount", reply);
    const devices: { deviceId: string; registeredAt: number; claimed: ServedKeyPackage | undefined }[] = [];
    for (let i = 1; i < reply.length; i += 5) {
      const [deviceId, registeredAt, kp, lastResort, replayed] = reply.slice(i, i + 5) as unknown[];
      if (typeof deviceId !== "string" || typeof registeredAt !== "number" || typeof kp !== "string") {
        throw unexpected("claimAccount", reply);
      }
      devices.push({
        deviceId,
        registeredAt,
        claimed:
          kp === ""
            ? undefined
            : { keyPackage: kp, lastResort: lastResort === "1", replayed: replayed === 1 },
      });
    }
    // Sorted here, not in Lua: Redis compares Lua strings by the server's locale, not byte by byte.
    devices.sort((a, b) => a.registeredAt - b.registeredAt || compare(a.deviceId, b.deviceId));
    return {
      status: "ok",
      devices: devices.map(({ deviceId, claimed }) => ({ deviceId, claimed })),
    };
  }

  async getDeviceList(acct: string): Promise<StoredDeviceList | undefined> {
    const reply = await getDeviceListScript.run(
      this.redis,
      [this.keys.deviceList(acct), this.keys.rotations(acct)],
      [],
    );
    if (reply === null) return undefined;
    if (!Array.isArray(reply) || !reply.every((x) => typeof x === "string")) {
      throw unexpected("getDeviceList", reply);
    }
    const [list, version, ...rotations] = reply;
    return {
      list: fromBase64url(list!),
      version: Number(version),
      rotations: rotations.map((r) => fromBase64url(r)),
    };
  }

  async putDeviceList(acct: string, r: DeviceListReplacement): Promise<PutDeviceListResult> {
    const keys = [this.keys.deviceList(acct), this.keys.rotations(acct), this.keys.devices(acct)];
    for (const deviceId of r.remove) {
      keys.push(
        this.keys.pool(acct, deviceId),
        this.keys.keyPackages(acct, deviceId),
        this.keys.lastResort(acct, deviceId),
      );
    }
    const args: (string | number)[] = [
      r.expectedVersion,
      r.version,
      toBase64url(r.list),
      r.rotation ? toBase64url(r.rotation) : "",
      this.limits.rotationsPerAccount,
      r.seen.length,
    ];
    for (const d of r.seen) args.push(d.deviceId, toBase64url(d.certificate));
    args.push(...r.remove);
    const reply = await putDeviceListScript.run(this.redis, keys, args);
    if (reply !== "ok" && reply !== "changed") throw unexpected("putDeviceList", reply);
    return reply;
  }

  /**
   * Walks every device's pool and last-resort keys with SCAN (never KEYS), purging what expired. Each
   * step is one script on one device's keys. SCAN may return a key twice: keys already seen are skipped,
   * so that nothing is counted twice.
   */
  async sweep(now: number): Promise<StoreStats> {
    const stats: StoreStats = { keyPackages: 0, lastResort: 0, purged: 0 };
    const seen = new Set<string>();
    const fresh = (kind: "pool" | "lastresort", batch: string[]) =>
      batch.flatMap((key) => {
        const owner = this.keys.parse(key, kind);
        if (!owner || seen.has(key)) return [];
        seen.add(key);
        return [{ key, ...owner }];
      });
    for await (const batch of this.scan(this.keys.pattern("pool"))) {
      const replies = await Promise.all(
        fresh("pool", batch).map(({ key, acct, deviceId }) =>
          sweepDeviceScript.run(
            this.redis,
            [key, this.keys.keyPackages(acct, deviceId), this.keys.spent(acct, deviceId)],
            [now],
          ),
        ),
      );
      for (const reply of replies) {
        if (!Array.isArray(reply) || typeof reply[0] !== "number" || typeof reply[1] !== "number") {
          throw unexpected("sweep", reply);
        }
        stats.keyPackages += reply[0];
        stats.purged += reply[1];
      }
    }
    for await (const batch of this.scan(this.keys.pattern("lastresort"))) {
      const replies = await Promise.all(
        fresh("lastresort", batch).map(({ key }) => sweepLastResortScript.run(this.redis, [key], [now])),
      );
      for (const reply of replies) {
        if (reply === 1) stats.lastResort += 1;
        else if (reply === 0) stats.purged += 1;
      }
    }
    return stats;
  }

  private scan(match: string): AsyncIterable<string[]> {
    return this.redis.scanStream({ match, count: 1000 }) as AsyncIterable<string[]>;
  }

  ready(): Promise<boolean> {
    return redisReady(this.redis);
  }
}

function decodeDevice(acct: string, deviceId: string, json: string): DeviceRecord {
  let rec: Partial<DeviceJson>;
  try {
    rec = JSON.parse(json) as Partial<DeviceJson>;
  } catch {
    // Not a SyntaxError to the caller: the error handler would call that the client's fault.
    throw unexpected("device record", "not JSON");
  }
  if (typeof rec.certificate !== "string" || typeof rec.sig_key !== "string") {
    throw unexpected("device record", "malformed");
  }
  return {
    acct,
    deviceId,
    certificate: fromBase64url(rec.certificate),
    sigKey: fromBase64url(rec.sig_key),
    registeredAt: Number(rec.registered_at ?? 0),
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A reply this code did not write: a bug or a foreign writer under our prefix, never a client error. */
function unexpected(what: string, reply: unknown): Error {
  return new Error(`unexpected Redis reply for ${what}: ${typeof reply}`);
}
