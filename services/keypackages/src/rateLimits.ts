import rateLimit from "@fastify/rate-limit";
import type { FastifyInstance, FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import type { Redis } from "ioredis";
import { ProtocolError } from "@mastodon-mls/protocol";
import type { RateLimit, RateLimits } from "./config.js";
import type { DirectoryMetrics } from "./metrics.js";
import type { RedisKeys } from "./store/redisKeys.js";

// The directory's rate limits (README "Rate limits"), counted by @fastify/rate-limit: its Redis store
// (one Lua INCR + PEXPIRE per hit, a fixed window per key) with STORE=redis, so every replica shares the
// counters; its in-memory LRU store otherwise.

export type LimitName = "device" | "domain" | "target" | "account";

export interface LimitOutcome {
  exceeded: boolean;
  /** Whole seconds until the key's window ends (at least 1 when exceeded). */
  retryAfterSeconds: number;
  max: number;
}

/** One limit, counting hits per key. */
export interface Limiter {
  readonly name: LimitName;
  readonly limit: RateLimit;
  /** Counts one hit for `key` and says whether that went over the limit. */
  hit(req: FastifyRequest, key: string): Promise<LimitOutcome>;
}

export type DirectoryLimiters = Record<LimitName, Limiter | undefined>;

/** Entries the in-memory store keeps per limit; the least recently used key beyond that is forgotten. */
const MEMORY_KEYS_PER_LIMIT = 100_000;

const LIMIT_KEY = Symbol("rateLimitKey");
type KeyedRequest = FastifyRequest & { [LIMIT_KEY]: string };

export interface LimiterOptions {
  limits: RateLimits;
  /** The store's connection and key layout with STORE=redis; in-memory counters otherwise. */
  redis?: { connection: Redis; keys: RedisKeys } | undefined;
}

/**
 * Registers the plugin once per limit, each in its own encapsulated context so that each has its own
 * namespace and window, and returns a checker per limit (undefined when limits are off). The plugin's
 * own per-route hook is not used: it runs at most one limit per request, before authentication, while
 * these limits key on who the request was authenticated as, or on each account a claim names.
 */
export async function createLimiters(app: FastifyInstance, opts: LimiterOptions): Promise<DirectoryLimiters> {
  const limiters: DirectoryLimiters = {
    device: undefined,
    domain: undefined,
    target: undefined,
    account: undefined,
  };
  if (!opts.limits.enabled) return limiters;
  for (const name of ["device", "domain", "target", "account"] as const) {
    limiters[name] = await createLimiter(app, name, opts.limits[name], opts.redis);
  }
  return limiters;
}

async function createLimiter(
  app: FastifyInstance,
  name: LimitName,
  limit: RateLimit,
  redis: LimiterOptions["redis"],
): Promise<Limiter> {
  let check: ReturnType<FastifyInstance["createRateLimit"]> | undefined;
  await app.register(async (scope) => {
    await scope.register(rateLimit, {
      global: false,
      max: limit.max,
      timeWindow: limit.windowSeconds * 1000,
      keyGenerator: (req) => (req as KeyedRequest)[LIMIT_KEY],
      // A Redis failure fails the request (503 store_unavailable), as the store would a moment later.
      skipOnError: false,
      ...(redis
        ? { redis: redis.connection, nameSpace: redis.keys.rateLimit(name) }
        : { cache: MEMORY_KEYS_PER_LIMIT }),
    });
    check = scope.createRateLimit();
  });
  if (!check) throw new Error(`rate limit ${name} was not created`);
  const run = check;
  return {
    name,
    limit,
    async hit(req, key) {
      // The plugin reads the key through keyGenerator(request): a request object that also carries the
      // key, so that one request can count against several keys (a claim naming several accounts).
      const keyed = Object.create(req, { [LIMIT_KEY]: { value: key } }) as KeyedRequest;
      const result = await run(keyed);
      if (result.isAllowed) return { exceeded: false, retryAfterSeconds: 0, max: limit.max };
      return {
        exceeded: result.isExceeded,
        retryAfterSeconds: Math.max(1, result.ttlInSeconds),
        max: result.max,
      };
    },
  };
}

const REFUSALS: Record<Exclude<LimitName, "target">, string> = {
  device: "This device made too many requests",
  domain: "Devices of this requester's domain made too many claims",
  account: "This account made too many registrations and uploads",
};

/**
 * A preValidation hook, run after authentication: counts the request against `limiter` under the key
 * `keyOf` gives, and refuses it with 429 `rate_limited` and `Retry-After` once over the limit.
 */
export function enforceLimit(
  limiter: Limiter | undefined,
  metrics: DirectoryMetrics,
  keyOf: (req: FastifyRequest) => string,
): preValidationAsyncHookHandler {
  return async (req, reply) => {
    if (!limiter) return;
    const outcome = await limiter.hit(req, keyOf(req));
    if (!outcome.exceeded) return;
    metrics.rateLimited.inc({ limit: limiter.name });
    void reply.header("retry-after", String(outcome.retryAfterSeconds));
    const name = limiter.name as Exclude<LimitName, "target">;
    throw new ProtocolError(
      "rate_limited",
      `${REFUSALS[name]} (at most ${limiter.limit.max} per ${limiter.limit.windowSeconds} s); ` +
        `retry in ${outcome.retryAfterSeconds} s.`,
      { limit: limiter.name, retry_after: outcome.retryAfterSeconds },
    );
  };
}
