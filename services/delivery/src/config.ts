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
} from "@mastodon-mls/service-kit";

// The delivery service's configuration, read from the environment once at start (DESIGN §10). Nothing
// else in this service reads process.env.

const DeliveryEnv = z
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
    /** Advertised at /.well-known/mls-services next to this service's own PUBLIC_URL. */
    DIRECTORY_URL: Origin.optional(),
    /** Past epochs whose application messages are still accepted; matches the clients' key retention. */
    APP_EPOCH_WINDOW: z.coerce.number().int().min(0).max(16).default(RETAIN_EPOCHS),
  })
  .superRefine(requireRedisWhenSelected);

export type StoreConfig = { kind: "memory" } | { kind: "redis"; url: string; prefix: string };

export interface DeliveryConfig {
  host: string;
  port: number;
  publicUrl: string;
  instanceDomain: string;
  store: StoreConfig;
  logLevel: string;
  directoryUrl: string | undefined;
  appEpochWindow: number;
}

/** Validates the environment; throws a ConfigError naming every bad variable. */
export function loadDeliveryConfig(env: Record<string, string | undefined>): DeliveryConfig {
  // An empty variable (`FOO=` in a unit file) means "not set", not "set to nothing".
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const e = parseEnv(DeliveryEnv, present);
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
    appEpochWindow: e.APP_EPOCH_WINDOW,
  };
}
