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
} from "@mastodon-mls/service-kit";

// The directory's configuration, read from the environment once at start (DESIGN §10). Nothing else in
// this service reads process.env.

const DirectoryEnv = z
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
  })
  .superRefine(requireRedisWhenSelected);

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
}

/** Validates the environment; throws a ConfigError naming every bad variable. */
export function loadDirectoryConfig(env: Record<string, string | undefined>): DirectoryConfig {
  // An empty variable (`FOO=` in a unit file) means "not set", not "set to nothing".
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const e = parseEnv(DirectoryEnv, present);
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
  };
}
