import os from "node:os";
import { z } from "zod";
import { DEFAULT_PORTS } from "@mastodon-mls/protocol";
import {
  LogLevel,
  Origin,
  Port,
  RedisUrl,
  parseEnv,
  requireRedisWhenSelected,
  InstanceDomain,
  RedisPrefix,
  EVEN_WITH_OTHER_ISSUES,
} from "@mastodon-mls/service-kit";

const Count = z.coerce.number().int().min(1).max(1_000_000_000);
const Seconds = z.coerce
  .number()
  .int()
  .min(1)
  .max(7 * 86_400);

/** One limit: at most `max` requests (or units) per key within a fixed window of `windowSeconds`. */
export interface RateLimit {
  max: number;
  windowSeconds: number;
}

/**
 * The directory's rate limits (README "Rate limits"). `device`: claims and count requests per requesting
 * device. `domain`: claims per requesting account key (the requester certificate's acct domain and the
 * account key that signed it: a domain alone is anyone's to name, D4). `target`:
 * claims naming one account that are served ordinary KeyPackages; later ones get last-resort ones.
 * `account`: registrations and uploads per bearer-token account.
 */
export interface RateLimits {
  enabled: boolean;
  device: RateLimit;
  domain: RateLimit;
  target: RateLimit;
  account: RateLimit;
}

export const DEFAULT_RATE_LIMITS: Omit<RateLimits, "enabled"> = {
  device: { max: 120, windowSeconds: 60 },
  domain: { max: 1200, windowSeconds: 60 },
  target: { max: 60, windowSeconds: 3600 },
  account: { max: 60, windowSeconds: 600 },
};

// The directory's configuration, read from the environment once at start (DESIGN §10). Nothing else in
// this service reads process.env.

/** Exported for the tests that hold the README's table and infra/systemd/directory.env.example to it. */
export const DirectoryEnv = z
  .object({
    HOST: z.string().default("127.0.0.1"),
    PORT: Port.default(DEFAULT_PORTS.directory),
    /** The origin clients reach this service at; device signatures are checked against it. */
    PUBLIC_URL: Origin.default(`http://127.0.0.1:${DEFAULT_PORTS.directory}`),
    /** The API origin of the one Mastodon instance whose accounts this directory serves. */
    MASTODON_URL: Origin,
    INSTANCE_DOMAIN: InstanceDomain.optional(),
    MASTODON_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(5_000),
    STORE: z.enum(["memory", "redis"]).default("memory"),
    REDIS_URL: RedisUrl.optional(),
    REDIS_PREFIX: RedisPrefix.default("kp:"),
    LOG_LEVEL: LogLevel,
    /** Advertised at /.well-known/mls-services next to this service's own PUBLIC_URL. */
    DELIVERY_URL: Origin.optional(),
    /** `off` disables every rate limit (benchmarks, trusted test rigs); never in production. */
    RATE_LIMITS: z.enum(["on", "off"]).default("on"),
    RATE_LIMIT_DEVICE_MAX: Count.default(DEFAULT_RATE_LIMITS.device.max),
    RATE_LIMIT_DEVICE_WINDOW_SECONDS: Seconds.default(DEFAULT_RATE_LIMITS.device.windowSeconds),
    RATE_LIMIT_DOMAIN_MAX: Count.default(DEFAULT_RATE_LIMITS.domain.max),
    RATE_LIMIT_DOMAIN_WINDOW_SECONDS: Seconds.default(DEFAULT_RATE_LIMITS.domain.windowSeconds),
    RATE_LIMIT_TARGET_MAX: Count.default(DEFAULT_RATE_LIMITS.target.max),
    RATE_LIMIT_TARGET_WINDOW_SECONDS: Seconds.default(DEFAULT_RATE_LIMITS.target.windowSeconds),
    RATE_LIMIT_ACCOUNT_MAX: Count.default(DEFAULT_RATE_LIMITS.account.max),
    RATE_LIMIT_ACCOUNT_WINDOW_SECONDS: Seconds.default(DEFAULT_RATE_LIMITS.account.windowSeconds),
    /**
     * `true`: an account without a signed device list can register no device, upload nothing and is
     * claimed as `no_devices` (docs/decisions.md D7). `false` (for now): such accounts work as before lists.
     */
    DEVICE_LIST_REQUIRED: z.enum(["true", "false"]).default("false"),
    /** How often expired KeyPackages are purged and the stored gauge is refreshed; 0 turns the sweep off. */
    SWEEP_INTERVAL_SECONDS: z.coerce.number().int().min(0).max(86_400).default(60),
    /**
     * Processes serving the port (node:cluster); `auto`: one per core. Each is a whole directory on the
     * shared Redis, so more than one needs STORE=redis.
     */
    WORKERS: z
      .union([z.literal("auto"), z.coerce.number().int().min(1).max(64)])
      .default(1)
      .transform((w) => (w === "auto" ? os.availableParallelism() : w)),
  })
  .superRefine(requireRedisWhenSelected, EVEN_WITH_OTHER_ISSUES)
  .superRefine((cfg, ctx) => {
    // In-memory nonces, counters and KeyPackages are per process: workers would each hand out their
    // own, and accept a request another one already saw.
    if (cfg.WORKERS > 1 && cfg.STORE !== "redis") {
      ctx.addIssue({ code: "custom", path: ["WORKERS"], message: "more than 1 needs STORE=redis" });
    }
  }, EVEN_WITH_OTHER_ISSUES);

export interface DirectoryConfig {
  host: string;
  port: number;
  publicUrl: string;
  mastodonUrl: string;
  /** When absent, read once from the instance (`GET /api/v2/instance` → `domain`). */
  instanceDomain: string | undefined;
  mastodonTimeoutMs: number;
  store: "memory" | "redis";
  redisUrl: string | undefined;
  redisPrefix: string;
  logLevel: string;
  deliveryUrl: string | undefined;
  rateLimits: RateLimits;
  /** Seconds between sweeps of expired KeyPackages; 0: no periodic sweep (pruning on access only). */
  sweepIntervalSeconds: number;
  /** Accounts without a device list can neither register, upload nor be claimed (D7). */
  deviceListRequired: boolean;
  /** Processes serving the port: 1 is this process alone; more run as a node:cluster (`serveDirectory`). */
  workers: number;
}

/** Validates the environment; throws a ConfigError naming every bad variable. */
export function loadDirectoryConfig(env: Record<string, string | undefined>): DirectoryConfig {
  const e = parseEnv(DirectoryEnv, env);
  return {
    host: e.HOST,
    port: e.PORT,
    publicUrl: e.PUBLIC_URL,
    mastodonUrl: e.MASTODON_URL,
    instanceDomain: e.INSTANCE_DOMAIN,
    mastodonTimeoutMs: e.MASTODON_TIMEOUT_MS,
    store: e.STORE,
    redisUrl: e.REDIS_URL,
    redisPrefix: e.REDIS_PREFIX,
    logLevel: e.LOG_LEVEL,
    deliveryUrl: e.DELIVERY_URL,
    rateLimits: {
      enabled: e.RATE_LIMITS === "on",
      device: { max: e.RATE_LIMIT_DEVICE_MAX, windowSeconds: e.RATE_LIMIT_DEVICE_WINDOW_SECONDS },
      domain: { max: e.RATE_LIMIT_DOMAIN_MAX, windowSeconds: e.RATE_LIMIT_DOMAIN_WINDOW_SECONDS },
      target: { max: e.RATE_LIMIT_TARGET_MAX, windowSeconds: e.RATE_LIMIT_TARGET_WINDOW_SECONDS },
      account: { max: e.RATE_LIMIT_ACCOUNT_MAX, windowSeconds: e.RATE_LIMIT_ACCOUNT_WINDOW_SECONDS },
    },
    sweepIntervalSeconds: e.SWEEP_INTERVAL_SECONDS,
    deviceListRequired: e.DEVICE_LIST_REQUIRED === "true",
    workers: e.WORKERS,
  };
}
