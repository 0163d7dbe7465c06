import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { KEY_EXPIRY_MARGIN_SECONDS } from "./redisScripts.js";
import { RedisDirectoryStore } from "./redisStore.js";
import { describeStoreContract } from "./storeContract.js";

let redisServer: RedisHandle;
const connections: Redis[] = [];

beforeAll(async () => {
  redisServer = await startRedis();
});
afterAll(async () => {
  await Promise.all(connections.map((c) => c.quit()));
  await redisServer.stop();
});

function connect(): Redis {
  const redis = connectRedis(redisServer.url, silentLogger());
  connections.push(redis);
  return redis;
}

let run = 0;
function freshPrefix(): string {
  run += 1;
  return `${redisServer.keyPrefix}kp${run}:`;
}

describeStoreContract("redis", async (limits) => {
  const prefix = freshPrefix();
  // Several connections, so that concurrent claims really interleave on the server.
  const peers = Array.from({ length: 5 }, () => new RedisDirectoryStore(connect(), prefix, limits));
  return { store: peers[0]!, peers, cleanup: async () => {} };
});

describe("RedisDirectoryStore specifics", () => {
  it("keeps every key of an account in the account's hash slot", async () => {
    const redis = connect();
    const prefix = freshPrefix();
    const store = new RedisDirectoryStore(redis, prefix);
    const now = Math.floor(Date.now() / 1000);
    const device = {
      acct: "alice@a.test",
      deviceId: "A".repeat(43),
      certificate: new Uint8Array([1, 2, 3]),
      sigKey: new Uint8Array(32).fill(1),
      registeredAt: now,
    };
    await store.putDevice(device);
    const kp = (ref: string) => ({ ref, keyPackage: new Uint8Array([9, 9]), notAfter: now + 3600 });
    await store.addKeyPackages(
      device.acct,
      device.deviceId,
      { keyPackages: [kp("r1"), kp("r2"), kp("r3")], lastResort: kp("lr") },
      now,
    );
    await store.claim(device.acct, device.deviceId, "B".repeat(43), now);
    await store.claimAccount(device.acct, {
      memoKey: "C".repeat(43),
      now,
      listRequired: false,
    });
    await store.putDeviceList(device.acct, {
      expectedVersion: 0,
      version: 1,
      list: new Uint8Array([5]),
      rotation: new Uint8Array([6]),
      seen: [{ deviceId: device.deviceId, certificate: device.certificate }],
      remove: [],
    });
    const keys = await redis.keys(`${prefix}*`);
    expect(keys.sort()).toEqual(
      [
        `${prefix}{alice@a.test}:devices`,
        `${prefix}{alice@a.test}:devicelist`,
        `${prefix}{alice@a.test}:rotations`,
        `${prefix}{alice@a.test}:pool:${"A".repeat(43)}`,
        `${prefix}{alice@a.test}:kps:${"A".repeat(43)}`,
        `${prefix}{alice@a.test}:spent:${"A".repeat(43)}`,
        `${prefix}{alice@a.test}:lastresort:${"A".repeat(43)}`,
        `${prefix}{alice@a.test}:memo:${"A".repeat(43)}:${"B".repeat(43)}`,
        `${prefix}{alice@a.test}:memo:${"A".repeat(43)}:${"C".repeat(43)}`,
      ].sort(),
    );
    const memoTtl = await redis.ttl(`${prefix}{alice@a.test}:memo:${"A".repeat(43)}:${"B".repeat(43)}`);
    expect(memoTtl).toBeGreaterThan(590);
    expect(memoTtl).toBeLessThanOrEqual(600);
  });

  it("gives every KeyPackage key a TTL past the last not_after it holds, so idle devices leave nothing", async () => {
    const redis = connect();
    const prefix = freshPrefix();
    const store = new RedisDirectoryStore(redis, prefix);
    const now = Math.floor(Date.now() / 1000);
    const deviceId = "D".repeat(43);
    const acct = "carol@a.test";
    await store.putDevice({
      acct,
      deviceId,
      certificate: new Uint8Array([1]),
      sigKey: new Uint8Array(32),
      registeredAt: now,
    });
    // A key written by an older version, without a TTL, gets one on the next write.
    await redis.zadd(`${prefix}{${acct}}:pool:${deviceId}`, now + 60, "legacy");
    const kp = (ref: string, life: number) => ({
      ref,
      keyPackage: new Uint8Array([7]),
      notAfter: now + life,
    });
    await store.addKeyPackages(
      acct,
      deviceId,
      { keyPackages: [kp("short", 1000), kp("long", 5000)], lastResort: kp("lr", 3000) },
      now,
    );
    const ttl = (kind: string) => redis.ttl(`${prefix}{${acct}}:${kind}:${deviceId}`);
    const margin = KEY_EXPIRY_MARGIN_SECONDS;
    for (const kind of ["pool", "kps"]) {
      expect(await ttl(kind)).toBeGreaterThan(5000 + margin - 5);
      expect(await ttl(kind)).toBeLessThanOrEqual(5000 + margin);
    }
    expect(await ttl("lastresort")).toBeLessThanOrEqual(3000 + margin);
    expect(await ttl("lastresort")).toBeGreaterThan(3000 + margin - 5);
    // A replacing last-resort KeyPackage that expires sooner shortens its key's life accordingly.
    await store.addKeyPackages(acct, deviceId, { keyPackages: [], lastResort: kp("lr2", 2000) }, now);
    expect(await ttl("lastresort")).toBeLessThanOrEqual(2000 + margin);
    // Handing out the soonest-expiring one puts its ref among the spent, which lives as long as it would.
    await store.claim(acct, deviceId, undefined, now);
    expect(await ttl("spent")).toBeLessThanOrEqual(1000 + margin);
    expect(await ttl("spent")).toBeGreaterThan(1000 + margin - 5);
    // The device record itself never expires.
    expect(await redis.ttl(`${prefix}{${acct}}:devices`)).toBe(-1);
  });

  it("names a claimed last-resort KeyPackage in its memo instead of copying it, and keeps a replaced one for the memo window only", async () => {
    const redis = connect();
    const prefix = freshPrefix();
    const store = new RedisDirectoryStore(redis, prefix);
    const now = Math.floor(Date.now() / 1000);
    const acct = "dave@a.test";
    const deviceIds = ["E", "F", "G"].map((c) => c.repeat(43));
    const lr = { ref: "lr", keyPackage: new Uint8Array(1500).fill(7), notAfter: now + 3600 };
    for (const deviceId of deviceIds) {
      await store.putDevice({
        acct,
        deviceId,
        certificate: new Uint8Array([1]),
        sigKey: new Uint8Array(32),
        registeredAt: now,
      });
      await store.addKeyPackages(acct, deviceId, { keyPackages: [], lastResort: lr }, now);
    }
    // One claim with a fresh claim id per device of the account: each memo is a few bytes, not a copy.
    const claimed = await store.claimAccount(acct, { memoKey: "H".repeat(43), now, listRequired: false });
    expect(claimed).toMatchObject({
      status: "ok",
      devices: deviceIds.map(() => ({ claimed: { lastResort: true } })),
    });
    for (const deviceId of deviceIds) {
      const memo = await redis.hgetall(`${prefix}{${acct}}:memo:${deviceId}:${"H".repeat(43)}`);
      expect(memo).toEqual({
        ref: "lr",
        last_resort: "1",
        not_after: String(now + 3600),
        until: String(now + 600),
      });
    }
    // Replaced: the old one is kept beside it, in the account's slot, for the memo window.
    const next = { ...lr, ref: "lr2", keyPackage: new Uint8Array([8]) };
    await store.addKeyPackages(acct, deviceIds[0]!, { keyPackages: [], lastResort: next }, now);
    const retired = `${prefix}{${acct}}:retired:${deviceIds[0]}`;
    expect(Object.keys(await redis.hgetall(retired))).toEqual(["lr"]);
    expect(await redis.ttl(retired)).toBeLessThanOrEqual(600);
    expect(await redis.ttl(retired)).toBeGreaterThan(590);
    // A later replacement forgets retired ones whose window is over.
    const last = { ...lr, ref: "lr3", keyPackage: new Uint8Array([9]) };
    await store.addKeyPackages(acct, deviceIds[0]!, { keyPackages: [], lastResort: last }, now + 600);
    expect(Object.keys(await redis.hgetall(retired))).toEqual(["lr2"]);
  });

  it("reloads its scripts after Redis forgot them", async () => {
    const redis = connect();
    const store = new RedisDirectoryStore(redis, freshPrefix());
    const now = Math.floor(Date.now() / 1000);
    await store.putDevice({
      acct: "bob@a.test",
      deviceId: "C".repeat(43),
      certificate: new Uint8Array([1]),
      sigKey: new Uint8Array(32),
      registeredAt: now,
    });
    await redis.script("FLUSH");
    expect(await store.countKeyPackages("bob@a.test", "C".repeat(43), now)).toEqual({
      count: 0,
      lastResort: false,
    });
    expect(await store.ready()).toBe(true);
  });
});
