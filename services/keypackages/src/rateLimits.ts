import rateLimit from "@fastify/rate-limit";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Redis } from "ioredis";
import { ProtocolError } from "@mastodon-mls/protocol";
import type { RateLimit, RateLimits } from "./config.js";
import type { DirectoryMetrics } from "./metrics.js";
import type { RedisKeys } from "./store/redisKeys.js";

// The directory's rate limits (README "Rate limits"), counted by @fastify/rate-limit: its Redis store
// (one Lua INCR + PEXPIRE per hit, a fixed window per key) with STORE=redis, so every replica and worker
// shares the counters; its in-memory LRU store otherwise. A request is admitted once its credentials
// checked out: the device-signed request's nonce is spent first (a replay is refused there and counts
// nothing), then the request is counted against each of its limits in order, stopping at the first one
// it is over (so it is not counted against the limits after it). The `target` limit is counted by the
// claim route per account it names, and downgrades the claim instead of refusing it (D4).

export type LimitName = "device" | "domain" | "target" | "account";
/** The limits that refuse a request (`target` downgrades a claim instead). */
export type RequesterLimit = Exclude<LimitName, "target">;

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

/** Each undefined when RATE_LIMITS=off. */
export type DirectoryLimiters = Record<LimitName, Limiter | undefined>;

/** Entries the in-memory store keeps per limit; the least recently used key beyond that is forgotten. */
export const MEMORY_KEYS_PER_LIMIT = 100_000;

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

/** One count: the limit, and the key it is counted under (a device id, a domain and account key, an acct). */
export interface Hit {
  limit: RequesterLimit;
  key: string;
}

/** The first limit a request went over, and the whole seconds until its window ends (at least 1). */
export interface Refusal {
  limit: RequesterLimit;
  retryAfterSeconds: number;
}

/** "replayed": the nonce was seen before and nothing was counted; else the refusal, if any. */
export type Admission = "replayed" | { refusal: Refusal | undefined };

export interface Admitter {
  /**
   * Spends `nonce` (when given; one already spent is "replayed" and nothing is counted), then counts
   * `req` against each hit in order, stopping at the first one over its limit.
   */
  admit(
    req: FastifyRequest,
    nonce: { key: string; ttlSeconds: number } | undefined,
    hits: readonly Hit[],
  ): Promise<Admission>;
}

/** Where nonces are spent: the bridge's MemoryNonceStore or service-kit's RedisNonceStore. */
export interface NonceSpender {
  /** True the first time a key is seen within `ttlSeconds`; false for a replay. */
  claim(key: string, ttlSeconds: number): Promise<boolean>;
}

const ADMITTED: Admission = { refusal: undefined };

/** The nonce store, then the plugin-backed limiters, one after the other. */
export class LimiterAdmitter implements Admitter {
  constructor(
    private readonly nonces: NonceSpender,
    private readonly limiters: DirectoryLimiters,
  ) {}

  async admit(
    req: FastifyRequest,
    nonce: { key: string; ttlSeconds: number } | undefined,
    hits: readonly Hit[],
  ): Promise<Admission> {
    if (nonce && !(await this.nonces.claim(nonce.key, nonce.ttlSeconds))) return "replayed";
    for (const { limit, key } of hits) {
      const limiter = this.limiters[limit];
      if (!limiter) continue;
      const outcome = await limiter.hit(req, key);
      if (outcome.exceeded) return { refusal: { limit, retryAfterSeconds: outcome.retryAfterSeconds } };
    }
    return ADMITTED;
  }
}

const REFUSALS: Record<RequesterLimit, string> = {
  device: "This device made too many requests",
  domain: "Devices certified by this requester's account key made too many claims",
  account: "This account made too many registrations and uploads",
};

/** Refuses a request over `refusal`'s limit: 429 `rate_limited` with `Retry-After`. */
export function refuse(
  reply: FastifyReply,
  metrics: DirectoryMetrics,
  limits: RateLimits,
  refusal: Refusal,
): never {
  const limit: RateLimit = limits[refusal.limit];
  metrics.rateLimited.inc({ limit: refusal.limit });
  void reply.header("retry-after", String(refusal.retryAfterSeconds));
  throw new ProtocolError(
    "rate_limited",
    `${REFUSALS[refusal.limit]} (at most ${limit.max} per ${limit.windowSeconds} s); ` +
      `retry in ${refusal.retryAfterSeconds} s.`,
    { limit: refusal.limit, retry_after: refusal.retryAfterSeconds },
  );
}
