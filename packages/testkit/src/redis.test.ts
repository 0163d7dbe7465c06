import { existsSync, readFileSync } from "node:fs";
import { afterEach, describe, expect, it, vi } from "vitest";
import { closeRedisClients, openRedisClientCount, redisClient } from "./clients.js";
import { findRedisServer, RedisBinaryError } from "./process-redis.js";
import { freePort } from "./ports.js";
import { startRedis } from "./redis.js";
import { processIsAlive } from "./test-helpers.js";
import type { RedisHandle } from "./types.js";
import { waitFor } from "./util.js";
import { useRedis } from "./vitest.js";

const haveRedisServer = (await findRedisServer(process.env.REDIS_SERVER_BIN || undefined)) !== undefined;

afterEach(async () => {
  vi.unstubAllEnvs();
  await closeRedisClients();
});

// Mode "auto": the external Redis when REDIS_URL is set, otherwise a private redis-server.
describe("startRedis in mode auto (honours REDIS_URL)", () => {
  const redis = useRedis({ flushEach: true });

  it("serves SET/GET", async () => {
    const client = redisClient(redis(), { prefixed: true });
    await client.set("greeting", "hello");
    expect(await client.get("greeting")).toBe("hello");
    expect(redis().url).toBe(
      `redis://${redis().host}:${redis().port}` + (redis().db ? `/${redis().db}` : ""),
    );
    if (!process.env.REDIS_URL) expect(redis().kind).toBe("process");
  });

  it("two handles are isolated", async () => {
    const other = await startRedis();
    try {
      expect(other.keyPrefix).not.toBe(redis().keyPrefix);
      const a = redisClient(redis(), { prefixed: true });
      const b = redisClient(other, { prefixed: true });
      await a.set("shared-name", "from-a");
      await b.set("shared-name", "from-b");
      expect(await a.get("shared-name")).toBe("from-a");
      expect(await b.get("shared-name")).toBe("from-b");
      if (other.kind === "process") {
        expect(other.port).not.toBe(redis().port);
        expect(other.dataDir).not.toBe(redis().dataDir);
        const rawA = redisClient(redis());
        await rawA.set("unprefixed", "only-in-a");
        expect(await redisClient(other).get("unprefixed")).toBeNull();
      }
    } finally {
      await other.stop();
    }
  });
});

describe.skipIf(!haveRedisServer)("mode process (real redis-server)", () => {
  it("kill() makes clients fail; restart() with AOF brings the data back on the same port", async () => {
    const redis = await startRedis({ mode: "process", persistence: "aof" });
    try {
      const { port, dataDir, pid } = redis;
      const client = redisClient(redis);
      await client.set("durable", "yes");
      await redis.kill();
      expect(redis.pid).toBeUndefined();
      expect(processIsAlive(pid ?? -1)).toBe(false);
      await expect(client.get("durable")).rejects.toThrow();

      await redis.restart();
      expect(redis.port).toBe(port);
      expect(redis.dataDir).toBe(dataDir);
      expect(redis.pid).not.toBe(pid);
      // The same client reconnects by itself; a fresh one sees the data too.
      await waitFor(async () => (await client.get("durable")) === "yes", {
        timeoutMs: 5000,
        message: "the old client to reconnect and read the key",
      });
      expect(await redisClient(redis).get("durable")).toBe("yes");
    } finally {
      await redis.stop();
    }
  });

  it("restart() with persistence none starts empty; flush() empties a running server", async () => {
    const redis = await startRedis({ mode: "process" });
    try {
      const client = redisClient(redis, { maxRetriesPerRequest: 20 });
      await client.set("k", "v");
      await redis.flush();
      expect(await client.get("k")).toBeNull();
      await client.set("k", "v");
      await redis.restart();
      expect(await client.get("k")).toBeNull();
    } finally {
      await redis.stop();
    }
  });

  it("stop() removes the temp dir, leaves no process, closes its clients, and is idempotent", async () => {
    const redis = await startRedis({ mode: "process", persistence: "aof" });
    const { pid, dataDir } = redis;
    if (pid === undefined || dataDir === undefined) throw new Error("process handle without pid/dataDir");
    expect(existsSync(dataDir)).toBe(true);
    expect(processIsAlive(pid)).toBe(true);
    if (process.platform === "linux") {
      // The pid is redis-server itself, even when started through setpriv.
      expect(readFileSync(`/proc/${pid}/comm`, "utf8").trim()).toBe("redis-server");
    }
    const client = redisClient(redis);
    await client.ping();
    await redis.stop();
    expect(existsSync(dataDir)).toBe(false);
    expect(processIsAlive(pid)).toBe(false);
    expect(client.status).toBe("end");
    expect(openRedisClientCount()).toBe(0);
    await redis.stop();
    await expect(redis.restart()).rejects.toThrow(/stopped/);
  });

  it("selects the requested db index", async () => {
    const redis = await startRedis({ mode: "process", db: 3 });
    try {
      expect(redis.url).toMatch(/\/3$/);
      await redisClient(redis).set("in-db-3", "1");
      expect(await redisClient(redis, { db: 0 }).get("in-db-3")).toBeNull();
      expect(await redisClient(redis, { db: 3 }).get("in-db-3")).toBe("1");
    } finally {
      await redis.stop();
    }
  });

  it("REDIS_URL makes startRedis use that server as an external one", async () => {
    const owner = await startRedis({ mode: "process" });
    try {
      vi.stubEnv("REDIS_URL", owner.url);
      const external = await startRedis();
      expect(external.kind).toBe("external");
      expect(external.port).toBe(owner.port);
      expect(external.dataDir).toBeUndefined();

      // It really is the same server.
      await redisClient(owner).set("written-by-owner", "1");
      expect(await redisClient(external).get("written-by-owner")).toBe("1");

      // flush() deletes only this handle's keys; kill/restart refuse.
      const prefixed = redisClient(external, { prefixed: true });
      await prefixed.set("mine", "1");
      await external.flush();
      expect(await prefixed.get("mine")).toBeNull();
      expect(await redisClient(owner).get("written-by-owner")).toBe("1");
      await expect(external.kill()).rejects.toThrow("cannot kill an external Redis");
      await expect(external.restart()).rejects.toThrow("cannot restart an external Redis");

      // stop() leaves the server running and deletes only this handle's keys.
      await prefixed.set("leftover", "1");
      await external.stop();
      expect(prefixed.status).toBe("end");
      const ownerClient = redisClient(owner);
      expect(await ownerClient.exists(`${external.keyPrefix}leftover`)).toBe(0);
      expect(await ownerClient.get("written-by-owner")).toBe("1");

      // An explicit mode still wins over REDIS_URL.
      const own = await startRedis({ mode: "process" });
      expect(own.kind).toBe("process");
      await own.stop();
    } finally {
      await owner.stop();
    }
  });

  it("an unreachable REDIS_URL gives a clear error", async () => {
    const port = await freePort();
    vi.stubEnv("REDIS_URL", `redis://:secret@127.0.0.1:${port}`);
    const err = (await startRedis().catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(
      /REDIS_URL=redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\/? is set but that Redis did not answer/,
    );
    expect(err.message).not.toContain("secret");
  });

  it("a bogus REDIS_SERVER_BIN gives a clear error instead of falling back", async () => {
    vi.stubEnv("REDIS_URL", "");
    vi.stubEnv("REDIS_SERVER_BIN", "/nonexistent/redis-server");
    const err = (await startRedis().catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(RedisBinaryError);
    expect(err.message).toContain('"/nonexistent/redis-server"');
    expect(err.message).toContain("REDIS_SERVER_BIN");
  });

  it("a server that refuses to start reports its log tail", async () => {
    const err = (await startRedis({ mode: "process", extraArgs: ["--no-such-directive", "x"] }).catch(
      (e: unknown) => e,
    )) as Error;
    expect(err.message).toMatch(/exited \(code 1, signal null\) before it answered PING/);
    expect(err.message).toContain("Bad directive");
  });
});

describe("when no Redis can be found", () => {
  it("explains how to get one (container fallback disabled)", async () => {
    const err = (await startRedis({ env: { PATH: "" }, container: false }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/no Redis available/);
    expect(err.message).toMatch(/redis-server/);
    expect(err.message).toMatch(/REDIS_URL/);
  });

  it("falls back to Docker, or says that Docker is not reachable", { timeout: 180_000 }, async () => {
    let handle: RedisHandle | undefined;
    try {
      handle = await startRedis({ env: { PATH: "" } });
    } catch (err) {
      expect((err as Error).message).toMatch(/Docker is not reachable .*apt-get install redis-server/s);
      return;
    }
    try {
      expect(handle.kind).toBe("container");
      const client = redisClient(handle);
      await client.set("k", "v");
      expect(await client.get("k")).toBe("v");
    } finally {
      await handle.stop();
    }
  });
});
