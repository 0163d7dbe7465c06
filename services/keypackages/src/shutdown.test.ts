import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { connectRedis, silentLogger } from "@mastodon-mls/service-kit";
import { deferred, startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { RedisDirectoryStore } from "./store/redisStore.js";
import { b64, createTestDevice } from "./testing/devices.js";
import { call, startDirectory, startMastodon } from "./testing/harness.js";

let mastodon: DevMastodon;
let redis: RedisHandle;

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
});
afterAll(async () => {
  await Promise.all([mastodon.close(), redis.stop()]);
});

describe("close()", () => {
  it("lets an in-flight request finish, refuses new connections, then closes Redis", async () => {
    const prefix = `${redis.keyPrefix}kp:`;
    const asked = deferred();
    const dir = await startDirectory(
      mastodon.url,
      { STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: prefix, INSTANCE_DOMAIN: "a.test" },
      {
        fetch: (input, init) => {
          asked.resolve();
          return fetch(input, init);
        },
      },
    );
    mastodon.createAccount({ username: "late" });
    const token = mastodon.issueToken({ username: "late", scopes: "read" });
    const device = await createTestDevice("late@a.test");

    // The token check hangs at Mastodon, so the registration is in flight when close() is called.
    mastodon.fault("hang", { pathPrefix: "/api/v1/accounts/verify_credentials" });
    const registering = call(dir.url, `/v1/devices/${device.deviceId}`, {
      method: "PUT",
      token,
      body: { certificate: b64(device.certificate) },
    });
    await asked.promise;
    const closing = dir.close();
    expect(dir.close()).toBe(closing);
    await expect(fetch(new URL("/healthz", dir.url))).rejects.toThrow();
    expect(await dir.directory.context.store.ready()).toBe(true);

    mastodon.fault("none");
    expect(await registering).toMatchObject({ status: 201, json: { device_id: device.deviceId } });
    await closing;
    expect(await dir.directory.context.store.ready()).toBe(false);

    // What the in-flight request wrote reached Redis before the connection went.
    const inspector = connectRedis(redis.url, silentLogger());
    try {
      const stored = await new RedisDirectoryStore(inspector, prefix).getDevice(
        "late@a.test",
        device.deviceId,
      );
      expect(stored?.certificate).toEqual(device.certificate);
    } finally {
      await inspector.quit();
    }
  });
});
