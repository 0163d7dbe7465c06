import { Redis, type RedisOptions } from "ioredis";
import type { NonceStore } from "@mastodon-mls/bridge";
import type { Logger } from "./logger.js";

export type { Redis } from "ioredis";

/**
 * How long a command may wait for its reply. A Redis that stops answering without closing the connection
 * (a frozen host, a network partition: no RST) otherwise held every command, and every request, until TCP
 * gave up, many minutes later; one that is down, until two reconnection attempts failed (10-15 s).
 * Replies take well under a millisecond; this is seconds of silence. A connection that waits on purpose
 * (pub/sub) sets `commandTimeout: undefined`.
 */
export const REDIS_COMMAND_TIMEOUT_MS = 3_000;

/**
 * One Redis connection per service context, closed in the app's onClose. While Redis is down or silent a
 * command fails (a 503, not a hung request) within REDIS_COMMAND_TIMEOUT_MS. Reconnection goes on in the
 * background.
 */
export function connectRedis(url: string, log: Logger, extra: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    lazyConnect: false,
    maxRetriesPerRequest: 2,
    enableOfflineQueue: true,
    connectTimeout: 5_000,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    ...extra,
  });
  let lastError = "";
  redis.on("error", (err: Error) => {
    // ioredis repeats the same error on every retry; log each distinct one once.
    if (err.message !== lastError) log.warn({ err: { message: err.message } }, "redis error");
    lastError = err.message;
  });
  redis.on("ready", () => {
    lastError = "";
    log.info("redis ready");
  });
  return redis;
}

/**
 * True when Redis answers PING within `timeoutMs`. Bounded because a command waits while ioredis
 * reconnects (measured: 10-15 s with Redis stopped) and, against a server that accepts the connection
 * and never replies, forever: a readiness probe needs its 503 sooner than its own timeout.
 */
export async function redisReady(redis: Redis, timeoutMs = 1_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  const ping = redis.ping().then(
    (answer) => answer === "PONG",
    () => false,
  );
  try {
    return await Promise.race([ping, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** DESIGN §7: nonces stored with `SET NX` and a TTL, so replicas sharing Redis refuse a replay. */
export class RedisNonceStore implements NonceStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async claim(key: string, ttlSeconds: number): Promise<boolean> {
    const ok = await this.redis.set(`${this.prefix}nonce:${key}`, "1", "EX", ttlSeconds, "NX");
    return ok === "OK";
  }
}
