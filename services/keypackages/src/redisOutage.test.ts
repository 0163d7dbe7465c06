import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { startRedis, waitFor, type RedisHandle } from "@mastodon-mls/testkit";
import { call, startDirectory, startMastodon, type RunningDirectory } from "./testing/harness.js";

// While Redis is down the directory says so (503, not a hang and not a 500), and recovers by itself.

let mastodon: DevMastodon;
let redis: RedisHandle;
let dir: RunningDirectory;

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis({ mode: "process" })]);
  dir = await startDirectory(mastodon.url, {
    STORE: "redis",
    REDIS_URL: redis.url,
    REDIS_PREFIX: `${redis.keyPrefix}kp:`,
    INSTANCE_DOMAIN: "a.test",
  });
});
afterAll(async () => {
  await dir.close();
  await Promise.all([mastodon.close(), redis.stop()]);
});

describe("when Redis goes away", () => {
  it("answers 503 store_unavailable and not ready, then serves again once Redis is back", async () => {
    expect(await call(dir.url, "/readyz")).toMatchObject({ status: 200 });
    await redis.kill();
    expect(await call(dir.url, "/v1/accounts/alice@a.test/devices")).toMatchObject({
      status: 503,
      json: { error: "store_unavailable" },
    });
    expect(await call(dir.url, "/readyz")).toMatchObject({ status: 503, json: { status: "unavailable" } });
    expect(await call(dir.url, "/healthz")).toMatchObject({ status: 200 });

    await redis.restart();
    await waitFor(async () => (await call(dir.url, "/readyz")).status === 200, { timeoutMs: 15_000 });
    expect(await call(dir.url, "/v1/accounts/alice@a.test/devices")).toMatchObject({
      status: 200,
      json: { devices: [] },
    });
  });
});

describe("when Redis stops answering without closing its connections", () => {
  it("answers 503 store_unavailable in seconds instead of waiting for TCP to give up", async () => {
    expect(await call(dir.url, "/v1/accounts/alice@a.test/devices")).toMatchObject({ status: 200 });
    process.kill(redis.pid!, "SIGSTOP");
    try {
      const answer = await Promise.race([
        call(dir.url, "/v1/accounts/alice@a.test/devices"),
        new Promise<"pending">((r) => setTimeout(() => r("pending"), 10_000)),
      ]);
      expect(answer).toMatchObject({ status: 503, json: { error: "store_unavailable" } });
    } finally {
      process.kill(redis.pid!, "SIGCONT");
    }
    await waitFor(async () => (await call(dir.url, "/readyz")).status === 200, { timeoutMs: 15_000 });
  }, 30_000);
});
