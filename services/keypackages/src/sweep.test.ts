import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { redisClient, startRedis, waitFor, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, keyPackageOf, keyPackagesOf } from "./testing/devices.js";
import {
  call,
  createMember,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "./testing/harness.js";

// Expired KeyPackages are purged by the sweep (and pruned on access): storage does not grow with
// devices that are never touched again, and the held gauge says what is left.

let mastodon: DevMastodon;
let redis: RedisHandle;
let dir: RunningDirectory;
let clock = Math.floor(Date.now() / 1000);
const prefix = () => `${redis.keyPrefix}kp:`;

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
  dir = await startDirectory(
    mastodon.url,
    { STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: prefix(), INSTANCE_DOMAIN: "a.test" },
    { now: () => clock },
  );
});
afterAll(async () => {
  await dir.close();
  await Promise.all([mastodon.close(), redis.stop()]);
});

function metric(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

describe("the sweep", () => {
  it("runs once the directory listens", async () => {
    await waitFor(
      async () =>
        metric((await call(dir.url, "/metrics")).json as string, 'keypackages_sweeps_total{result="ok"}') !==
        undefined,
      { timeoutMs: 10_000 },
    );
  });

  it("purges expired KeyPackages of idle devices from Redis and counts what is left", async () => {
    const now = Math.floor(Date.now() / 1000);
    // KeyPackages are made with not_before 300 s in the past: a lifetime of 1300 s ends at now + 1000.
    const idle = await createMember(mastodon, dir.url, "idle");
    const short = await Promise.all(
      [1, 2].map(() => keyPackageOf(idle.device, { lifetimeSeconds: 1300, now })),
    );
    const shortLastResort = await keyPackageOf(idle.device, { lifetimeSeconds: 1300, now, lastResort: true });
    await call(dir.url, `/v1/devices/${idle.device.deviceId}/keypackages`, {
      token: idle.token,
      body: { key_packages: short.map((k) => b64(k.encoded)), last_resort: b64(shortLastResort.encoded) },
    });
    const busy = await createMember(mastodon, dir.url, "busy");
    const long = await keyPackagesOf(busy.device, 3);
    const [longLastResort] = await keyPackagesOf(busy.device, 1, { lastResort: true });
    await call(dir.url, `/v1/devices/${busy.device.deviceId}/keypackages`, {
      token: busy.token,
      body: { key_packages: long.map((k) => b64(k.encoded)), last_resort: b64(longLastResort!.encoded) },
    });

    expect(await dir.directory.sweep()).toEqual({ keyPackages: 5, lastResort: 2, purged: 0 });
    const inspector = redisClient(redis);
    try {
      const idleKeys = () => inspector.keys(`${prefix()}{idle@a.test}:*`);
      expect((await idleKeys()).sort()).toEqual(
        ["devices", "kps", "lastresort", "pool"]
          .map((k) =>
            k === "devices"
              ? `${prefix()}{idle@a.test}:devices`
              : `${prefix()}{idle@a.test}:${k}:${idle.device.deviceId}`,
          )
          .sort(),
      );

      clock = now + 1000;
      expect(await dir.directory.sweep()).toEqual({ keyPackages: 3, lastResort: 1, purged: 3 });
      // Only the device record of the idle device is left.
      expect(await idleKeys()).toEqual([`${prefix()}{idle@a.test}:devices`]);
    } finally {
      inspector.disconnect();
    }
    const text = (await call(dir.url, "/metrics")).json as string;
    expect(metric(text, 'keypackages_held{kind="ordinary"}')).toBe(3);
    expect(metric(text, 'keypackages_held{kind="last_resort"}')).toBe(1);
    expect(metric(text, "keypackages_expired_purged_total")).toBe(3);
  });
});
