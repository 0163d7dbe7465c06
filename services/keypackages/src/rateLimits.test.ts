import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { generateSigningKeyPair } from "@mastodon-mls/bridge";
import { redisClient, startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, createTestDevice, deviceSigned, keyPackagesOf, type TestDevice } from "./testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type Answer,
  type RunningDirectory,
} from "./testing/harness.js";

// Every limit reached, on both stores: 429 `rate_limited` with Retry-After for requesters, last-resort
// KeyPackages only for an account whose claim budget is spent. Windows are an hour: nothing here
// depends on time passing.

let mastodon: DevMastodon;
let redis: RedisHandle;

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
});
afterAll(async () => {
  await Promise.all([mastodon.close(), redis.stop()]);
});

const HOUR = "3600";
const LIMITS = {
  INSTANCE_DOMAIN: "a.test",
  RATE_LIMIT_DEVICE_MAX: "3",
  RATE_LIMIT_DEVICE_WINDOW_SECONDS: HOUR,
  RATE_LIMIT_DOMAIN_MAX: "4",
  RATE_LIMIT_DOMAIN_WINDOW_SECONDS: HOUR,
  RATE_LIMIT_TARGET_MAX: "2",
  RATE_LIMIT_TARGET_WINDOW_SECONDS: HOUR,
  RATE_LIMIT_ACCOUNT_MAX: "3",
  RATE_LIMIT_ACCOUNT_WINDOW_SECONDS: HOUR,
};

function expectLimited(res: Answer, limit: string): void {
  expect(res.status, JSON.stringify(res.json)).toBe(429);
  expect(res.json).toMatchObject({ error: "rate_limited", limit });
  expect(res.json.message).toMatch(/retry in \d+ s/);
  const retryAfter = Number(res.headers.get("retry-after"));
  expect(retryAfter).toBeGreaterThan(3500);
  expect(retryAfter).toBeLessThanOrEqual(3600);
}

let n = 0;
const unique = (base: string) => `${base}${++n}`;

describe.each(["memory", "redis"] as const)("rate limits, %s store", (store) => {
  let dir: RunningDirectory;
  beforeAll(async () => {
    dir = await startDirectory(
      mastodon.url,
      store === "redis"
        ? { ...LIMITS, STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: `${redis.keyPrefix}kp:` }
        : LIMITS,
    );
  });
  afterAll(async () => {
    await dir.close();
  });

  async function claim(requester: TestDevice, accounts: string[], url = dir.url): Promise<Answer> {
    const body = { ciphersuite: 1, accounts };
    const signed = await deviceSigned(requester, {
      origin: PUBLIC_URL,
      method: "POST",
      path: "/v1/claims",
      body,
    });
    return call(url, "/v1/claims", { method: "POST", ...signed });
  }

  async function count(device: TestDevice): Promise<Answer> {
    const path = `/v1/devices/${device.deviceId}/keypackages/count`;
    return call(dir.url, path, await deviceSigned(device, { origin: PUBLIC_URL, method: "GET", path }));
  }

  it("limits a requesting device, claims and count requests together", async () => {
    const member = await createMember(mastodon, dir.url, unique(`dev_${store}_`));
    expect((await count(member.device)).status).toBe(200);
    expect((await claim(member.device, ["nobody@a.test"])).status).toBe(200);
    expect((await claim(member.device, ["nobody@a.test"])).status).toBe(200);
    expectLimited(await claim(member.device, ["nobody@a.test"]), "device");
    expectLimited(await count(member.device), "device");
    // Another device of the same account has its own budget.
    const other = await createTestDevice(member.acct, { account: member.device.account });
    expect((await claim(other, ["nobody@a.test"])).status).toBe(200);
  });

  it("limits the devices of one account key together", async () => {
    const domain = `${unique(`crowd-${store}-`)}.test`;
    const account = await generateSigningKeyPair();
    for (let i = 0; i < 4; i++) {
      const device = await createTestDevice(`u@${domain}`, { account });
      expect((await claim(device, ["nobody@a.test"])).status).toBe(200);
    }
    const fifth = await createTestDevice(`u@${domain}`, { account });
    expectLimited(await claim(fifth, ["nobody@a.test"]), "domain");
    // A domain is anyone's to name (D4): devices of the same domain under other account keys, minted or
    // real, neither spend that budget nor are held back by it.
    for (let i = 0; i < 5; i++) {
      const other = await createTestDevice(`u${i}@${domain}`);
      expect((await claim(other, ["nobody@a.test"])).status).toBe(200);
    }
  });

  it("minted certificates for this instance's domain spend no budget of its registered devices", async () => {
    const member = await createMember(mastodon, dir.url, unique(`victim_${store}_`));
    const mallory = await generateSigningKeyPair();
    for (let i = 0; i < 2; i++) {
      const minted = await createTestDevice("nobody@a.test", { account: mallory });
      for (let j = 0; j < 2; j++) expect((await claim(minted, ["x@b.test"])).status).toBe(200);
    }
    expectLimited(
      await claim(await createTestDevice("nobody@a.test", { account: mallory }), ["x@b.test"]),
      "domain",
    );
    expect((await claim(member.device, ["x@b.test"])).status).toBe(200);
  });

  it("stops handing out an account's ordinary KeyPackages once its claim budget is spent", async () => {
    const target = await createMember(mastodon, dir.url, unique(`target_${store}_`), {
      keyPackages: 5,
      lastResort: true,
    });
    const bystander = await createMember(mastodon, dir.url, unique(`bystander_${store}_`), {
      keyPackages: 1,
    });
    const kinds: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      // A new requester of a new domain each time: only the target's budget is in play.
      const requester = await createTestDevice(`r@${unique(`drain-${store}-`)}.test`);
      const res = await claim(requester, [target.acct]);
      expect(res.status).toBe(200);
      expect(res.json.accounts[0]).toMatchObject({ status: "ok", exhausted: [] });
      kinds.push(res.json.accounts[0].key_packages[0].last_resort as boolean);
    }
    expect(kinds).toEqual([false, false, true, true]);
    // Three ordinary KeyPackages are still there for the window to come; the bystander is untouched.
    const left = await count(target.device);
    expect(left.json).toEqual({ count: 3, last_resort: true });
    const requester = await createTestDevice(`r@${unique(`drain-${store}-`)}.test`);
    const other = await claim(requester, [bystander.acct]);
    expect(other.json.accounts[0].key_packages[0].last_resort).toBe(false);
    const metrics = await call(dir.url, "/metrics");
    expect(metrics.json).toMatch(/keypackages_rate_limited_total\{limit="target"\} 2/);
  });

  it("limits registrations and uploads per bearer-token account", async () => {
    // Registration and one upload: two of three.
    const member = await createMember(mastodon, dir.url, unique(`up_${store}_`), { keyPackages: 1 });
    const [a, b] = await keyPackagesOf(member.device, 2);
    const upload = (kp: Uint8Array) =>
      call(dir.url, `/v1/devices/${member.device.deviceId}/keypackages`, {
        token: member.token,
        body: { key_packages: [b64(kp)] },
      });
    expect((await upload(a!.encoded)).status).toBe(200);
    expectLimited(await upload(b!.encoded), "account");
    // Registering counts against the same budget.
    const second = await createTestDevice(member.acct, { account: member.device.account });
    const reg = await call(dir.url, `/v1/devices/${second.deviceId}`, {
      method: "PUT",
      token: member.token,
      body: { certificate: b64(second.certificate) },
    });
    expectLimited(reg, "account");
    const metrics = await call(dir.url, "/metrics");
    expect(metrics.json).toMatch(/keypackages_rate_limited_total\{limit="account"\} 2/);
  });
});

describe("rate limits with STORE=redis", () => {
  it("are shared by every replica on the same Redis, and can be turned off", async () => {
    const env = {
      ...LIMITS,
      STORE: "redis",
      REDIS_URL: redis.url,
      REDIS_PREFIX: `${redis.keyPrefix}shared:`,
    };
    const [one, two, off] = await Promise.all([
      startDirectory(mastodon.url, env),
      startDirectory(mastodon.url, env),
      startDirectory(mastodon.url, { ...env, RATE_LIMITS: "off" }),
    ]);
    try {
      const requester = await createTestDevice(`r@${unique("replicas-")}.test`);
      const claimAt = async (url: string) => {
        const body = { ciphersuite: 1, accounts: ["nobody@a.test"] };
        const signed = await deviceSigned(requester, {
          origin: PUBLIC_URL,
          method: "POST",
          path: "/v1/claims",
          body,
        });
        return call(url, "/v1/claims", { method: "POST", ...signed });
      };
      expect((await claimAt(one.url)).status).toBe(200);
      expect((await claimAt(two.url)).status).toBe(200);
      expect((await claimAt(one.url)).status).toBe(200);
      expectLimited(await claimAt(two.url), "device");
      for (let i = 0; i < 5; i++) expect((await claimAt(off.url)).status).toBe(200);
      // The plugin's counters, under the directory's prefix (README "Storage").
      const inspector = redisClient(redis);
      try {
        const keys = await inspector.keys(`${env.REDIS_PREFIX}rl:*`);
        expect(keys.sort()).toEqual(
          [
            `${env.REDIS_PREFIX}rl:device:${requester.deviceId}`,
            `${env.REDIS_PREFIX}rl:domain:${requester.acct.split("@")[1]}/${b64(requester.account.publicKey)}`,
          ].sort(),
        );
        expect(await inspector.get(`${env.REDIS_PREFIX}rl:device:${requester.deviceId}`)).toBe("4");
      } finally {
        inspector.disconnect();
      }
    } finally {
      await Promise.all([one.close(), two.close(), off.close()]);
    }
  });
});
