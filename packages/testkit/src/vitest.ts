/**
 * vitest integration, a separate entry point (`@mastodon-mls/testkit/vitest`) so that the main
 * entry never imports vitest.
 */
import { afterAll, beforeAll, beforeEach } from "vitest";
import { closeRedisClients } from "./clients.js";
import { startRedis, type StartRedisOptions } from "./redis.js";
import type { RedisHandle } from "./types.js";

export interface UseRedisOptions extends StartRedisOptions {
  /** flush() before every test of the enclosing describe block. Default false. */
  flushEach?: boolean;
}

/**
 * Starts a Redis in beforeAll and stops it in afterAll of the enclosing describe (or file);
 * returns a getter usable inside tests and hooks.
 *
 *   const redis = useRedis();
 *   it("works", async () => { const client = redisClient(redis()); ... });
 */
export function useRedis(options: UseRedisOptions = {}): () => RedisHandle {
  const { flushEach = false, ...startOptions } = options;
  let handle: RedisHandle | undefined;
  beforeAll(async () => {
    handle = await startRedis(startOptions);
  });
  if (flushEach) {
    beforeEach(async () => {
      await handle?.flush();
    });
  }
  afterAll(async () => {
    const h = handle;
    handle = undefined;
    if (h !== undefined) {
      await closeRedisClients(h);
      await h.stop();
    }
  });
  return () => {
    if (handle === undefined) {
      throw new Error("useRedis(): the handle exists only inside tests and hooks, after beforeAll has run");
    }
    return handle;
  };
}
