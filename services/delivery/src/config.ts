import { z } from "zod";
import { DEFAULT_PORTS, RETAIN_EPOCHS } from "@mastodon-mls/protocol";
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

// The delivery service's configuration, read from the environment once at start (DESIGN §10). Nothing
// else in this service reads process.env.

/** Exported for the test that holds docs/operations.md and the README to it. */
export const DeliveryEnv = z
  .object({
    HOST: z.string().default("127.0.0.1"),
    PORT: Port.default(DEFAULT_PORTS.delivery),
    /** The origin clients reach this service at: request signatures cover it, and it is the `hub` of its groups. */
    PUBLIC_URL: Origin.default(`http://127.0.0.1:${DEFAULT_PORTS.delivery}`),
    /** Invitations are queued for accounts of this domain only. */
    INSTANCE_DOMAIN: InstanceDomain,
    STORE: z.enum(["memory", "redis"]).default("memory"),
    REDIS_URL: RedisUrl.optional(),
    // No braces: every key is hash-tagged by group, device or account, and a brace here would break that.
    REDIS_PREFIX: RedisPrefix.default("ds:"),
    LOG_LEVEL: LogLevel,
    /**
     * This instance's key-package directory: advertised at /.well-known/mls-services, and asked which
     * devices an account of INSTANCE_DOMAIN has. Unset: the hub queues and serves no invitations.
     */
    DIRECTORY_URL: Origin.optional(),
    /** How long the directory's answer about an account's devices is used (a revocation waits this long). */
    DIRECTORY_CACHE_SECONDS: z.coerce.number().int().min(1).max(3600).default(60),
    /** Past epochs whose application messages are still accepted; matches the clients' key retention. */
    APP_EPOCH_WINDOW: z.coerce.number().int().min(0).max(16).default(RETAIN_EPOCHS),
    /** Log entries, Welcomes and invitations are deleted this long after they were accepted at the latest. */
    RETENTION_SECONDS: z.coerce
      .number()
      .int()
      .min(60)
      .max(366 * 86400)
      .default(14 * 86400),
    /** How often each replica deletes what is older than RETENTION_SECONDS. */
    RETENTION_SWEEP_SECONDS: z.coerce.number().int().min(1).max(86400).default(60),
    /** The window of every rate limit below. */
    RATE_WINDOW_SECONDS: z.coerce.number().int().min(1).max(3600).default(60),
    /** Submissions (any message, and fork reports) per device per window. */
    RATE_SUBMISSIONS: z.coerce.number().int().min(1).default(1200),
    /** Commits per device per window (they count as submissions too). */
    RATE_COMMITS: z.coerce.number().int().min(1).default(60),
    /**
     * Invitations per sending account per window, and as many per sending device: a certificate is
     * self-issued, so a device of another instance could otherwise make up a new account for each one.
     */
    RATE_INVITATIONS: z.coerce.number().int().min(1).default(60),
    /** Invitations an account of this instance is sent per window, from everyone together. */
    RATE_INVITATIONS_RECEIVED: z.coerce.number().int().min(1).default(120),
    /** Invitations waiting for one account at most (not yet read by all its devices); more are refused. */
    MAX_QUEUED_INVITATIONS: z.coerce.number().int().min(1).max(1_000_000).default(1000),
    /** A stream that sent a frame less than this many ms ago holds new pushes until then (0: never holds). */
    PUSH_COALESCE_MS: z.coerce.number().int().min(0).max(100).default(5),
  })
  .superRefine(requireRedisWhenSelected, EVEN_WITH_OTHER_ISSUES);

export type StoreConfig = { kind: "memory" } | { kind: "redis"; url: string; prefix: string };

export interface DeliveryConfig {
  host: string;
  port: number;
  publicUrl: string;
  instanceDomain: string;
  store: StoreConfig;
  logLevel: string;
  directoryUrl: string | undefined;
  directoryCacheSeconds: number;
  appEpochWindow: number;
  retentionSeconds: number;
  sweepSeconds: number;
  rateLimits: RateLimitConfig;
  maxQueuedInvitations: number;
  pushCoalesceMs: number;
}

export interface RateLimitConfig {
  windowSeconds: number;
  submissions: number;
  commits: number;
  invitations: number;
  invitationsReceived: number;
}

/** Validates the environment; throws a ConfigError naming every bad variable. */
export function loadDeliveryConfig(env: Record<string, string | undefined>): DeliveryConfig {
  const e = parseEnv(DeliveryEnv, env);
  return {
    host: e.HOST,
    port: e.PORT,
    publicUrl: e.PUBLIC_URL,
    instanceDomain: e.INSTANCE_DOMAIN,
    store:
      e.STORE === "redis" && e.REDIS_URL
        ? { kind: "redis", url: e.REDIS_URL, prefix: e.REDIS_PREFIX }
        : { kind: "memory" },
    logLevel: e.LOG_LEVEL,
    directoryUrl: e.DIRECTORY_URL,
    directoryCacheSeconds: e.DIRECTORY_CACHE_SECONDS,
    appEpochWindow: e.APP_EPOCH_WINDOW,
    retentionSeconds: e.RETENTION_SECONDS,
    sweepSeconds: e.RETENTION_SWEEP_SECONDS,
    rateLimits: {
      windowSeconds: e.RATE_WINDOW_SECONDS,
      submissions: e.RATE_SUBMISSIONS,
      commits: e.RATE_COMMITS,
      invitations: e.RATE_INVITATIONS,
      invitationsReceived: e.RATE_INVITATIONS_RECEIVED,
    },
    maxQueuedInvitations: e.MAX_QUEUED_INVITATIONS,
    pushCoalesceMs: e.PUSH_COALESCE_MS,
  };
}
