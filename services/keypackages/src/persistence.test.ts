import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { redisClient, startRedis, waitFor, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, createTestDevice, deviceSigned, keyPackagesOf, type TestDevice } from "./testing/devices.js";
import { PUBLIC_URL, call, startDirectory, startMastodon, type RunningDirectory } from "./testing/harness.js";

// Restarts lose nothing: the service restarted on the same Redis, then Redis itself killed (SIGKILL) and
// restarted from its append-only file. Devices, KeyPackages, spent refs, remembered claims, request
// nonces and rate-limit counters all survive.

let mastodon: DevMastodon;
let redis: RedisHandle;
const env = () => ({
  STORE: "redis",
  REDIS_URL: redis.url,
  REDIS_PREFIX: `${redis.keyPrefix}kp:`,
  INSTANCE_DOMAIN: "a.test",
  RATE_LIMIT_DEVICE_MAX: "100",
  RATE_LIMIT_DEVICE_WINDOW_SECONDS: "3600",
});

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([
    startMastodon("a.test"),
    startRedis({ mode: "process", persistence: "aof" }),
  ]);
});
afterAll(async () => {
  await Promise.all([mastodon.close(), redis.stop()]);
});

async function signedClaim(requester: TestDevice, accounts: string[], claimId: string) {
  const body = { ciphersuite: 1, accounts, claim_id: claimId };
  return deviceSigned(requester, { origin: PUBLIC_URL, method: "POST", path: "/v1/claims", body });
}

describe("restarts", () => {
  it("lose nothing: neither a restart of the service nor a killed and restarted Redis", async () => {
    let dir: RunningDirectory = await startDirectory(mastodon.url, env());
    try {
      mastodon.createAccount({ username: "alice" });
      const token = mastodon.issueToken({ username: "alice", scopes: "read write" });
      const phone = await createTestDevice("alice@a.test");
      const laptop = await createTestDevice("alice@a.test", { account: phone.account });
      for (const d of [phone, laptop]) {
        const reg = await call(dir.url, `/v1/devices/${d.deviceId}`, {
          method: "PUT",
          token,
          body: { certificate: b64(d.certificate) },
        });
        expect(reg.status).toBe(201);
      }
      const kps = await keyPackagesOf(phone, 4);
      const [lastResort] = await keyPackagesOf(phone, 1, { lastResort: true });
      const up = await call(dir.url, `/v1/devices/${phone.deviceId}/keypackages`, {
        token,
        body: { key_packages: kps.map((k) => b64(k.encoded)), last_resort: b64(lastResort!.encoded) },
      });
      expect(up.json).toEqual({ stored: 5, count: 4, last_resort: true });

      const bob = await createTestDevice("bob@b.test");
      const claimId = "bob-adds-alice-0001";
      const first = await signedClaim(bob, ["alice@a.test"], claimId);
      const firstAnswer = await call(dir.url, "/v1/claims", { method: "POST", ...first });
      expect(firstAnswer.status).toBe(200);
      const given = firstAnswer.json.accounts[0].key_packages[0].key_package as string;

      const devicesBefore = (await call(dir.url, "/v1/accounts/alice@a.test/devices")).json;
      expect(devicesBefore.devices).toHaveLength(2);

      /** Everything this test stored, read back through the service. */
      const expectEverythingKept = async (
        at: string,
        replayed: { headers: Record<string, string>; raw: string | undefined },
      ) => {
        expect((await call(at, "/v1/accounts/alice@a.test/devices")).json).toEqual(devicesBefore);
        const path = `/v1/devices/${phone.deviceId}/keypackages/count`;
        const count = await call(
          at,
          path,
          await deviceSigned(phone, { origin: PUBLIC_URL, method: "GET", path }),
        );
        expect(count.json).toEqual({ count: 3, last_resort: true });
        // The remembered claim: the same intent gets the same KeyPackage.
        const again = await call(at, "/v1/claims", {
          method: "POST",
          ...(await signedClaim(bob, ["alice@a.test"], claimId)),
        });
        expect(again.json.accounts[0].key_packages[0].key_package).toBe(given);
        // The spent ref: uploading the handed-out KeyPackage again does not put it back.
        const handedOut = kps.find((k) => b64(k.encoded) === given)!;
        const reupload = await call(at, `/v1/devices/${phone.deviceId}/keypackages`, {
          token,
          body: { key_packages: [b64(handedOut.encoded)] },
        });
        expect(reupload.json).toEqual({ stored: 0, count: 3, last_resort: true });
        // The nonce: a request already answered is still refused as a replay.
        expect(await call(at, "/v1/claims", { method: "POST", ...replayed })).toMatchObject({
          status: 401,
          json: { error: "auth_replayed" },
        });
      };

      // 1. The service restarts on the same Redis.
      await dir.close();
      dir = await startDirectory(mastodon.url, env());
      await expectEverythingKept(dir.url, first);

      // 2. Redis is killed without a chance to save anything, and restarted from its append-only file.
      await redis.kill();
      expect((await call(dir.url, "/readyz")).status).toBe(503);
      await redis.restart();
      await waitFor(async () => (await call(dir.url, "/readyz")).status === 200, { timeoutMs: 15_000 });
      await expectEverythingKept(dir.url, first);

      // The rate-limit counters survived too: bob's first claim and one repeat after each restart (the
      // replays were refused before they counted); the phone's two count requests.
      const inspector = redisClient(redis);
      try {
        expect(await inspector.get(`${env().REDIS_PREFIX}rl:device:${bob.deviceId}`)).toBe("3");
        expect(await inspector.get(`${env().REDIS_PREFIX}rl:device:${phone.deviceId}`)).toBe("2");
      } finally {
        inspector.disconnect();
      }
      // And the directory goes on handing out fresh KeyPackages, never one it already gave.
      const carol = await createTestDevice("carol@c.test");
      const fresh = await call(dir.url, "/v1/claims", {
        method: "POST",
        ...(await signedClaim(carol, ["alice@a.test"], "carol-adds-alice-0001")),
      });
      const next = fresh.json.accounts[0].key_packages as {
        device_id: string;
        key_package: string;
        last_resort: boolean;
      }[];
      expect(next).toHaveLength(1);
      expect(next[0]).toMatchObject({ device_id: phone.deviceId, last_resort: false });
      expect(next[0]!.key_package).not.toBe(given);
      expect(fresh.json.accounts[0].exhausted).toEqual([laptop.deviceId]);
    } finally {
      await dir.close();
    }
  });
});
