import { randomBytes } from "node:crypto";
import { ContainerRedis, dockerUnavailableReason, stopAllContainerRedis } from "./container-redis.js";
import { ExternalRedis, type ExternalFlush } from "./external-redis.js";
import { findRedisServer, ProcessRedis, stopAllProcessRedis } from "./process-redis.js";
import type { RedisHandle, RedisPersistence } from "./types.js";

export type RedisMode = "auto" | "external" | "process" | "container";

export interface StartRedisOptions {
  /**
   * "auto" (default): REDIS_URL if set, else a redis-server binary, else Docker, else an error.
   * Fault tests (kill/restart) should ask for "process" explicitly.
   */
  mode?: RedisMode;
  /** "aof": append-only file with fsync on every write, so restart() and kill() keep the data. Default "none". */
  persistence?: RedisPersistence;
  /** Database index the handle's URL selects. Default: 0 (or the one in REDIS_URL). */
  db?: number;
  /** Prefix for the handle's unique keyPrefix (default "mmls-test"). */
  keyPrefixBase?: string;
  /** External Redis to use instead of REDIS_URL. */
  url?: string;
  /** redis-server executable; default REDIS_SERVER_BIN, then PATH. */
  redisServerBin?: string;
  /** Extra redis-server arguments, e.g. ["--maxmemory", "10mb"] (process and container modes). */
  extraArgs?: readonly string[];
  /** Startup deadline in ms (default 10 s for a process, 120 s for a container, which may pull). */
  startTimeoutMs?: number;
  /** Whether "auto" may fall back to Docker (default true). */
  container?: boolean;
  /** Container image (default "redis:7"). */
  image?: string;
  /** What flush() deletes on an external Redis: "prefix" (default, only keyPrefix*) or "db" (FLUSHDB). */
  externalFlush?: ExternalFlush;
  /** Environment to read REDIS_URL, REDIS_SERVER_BIN, PATH from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** A prefix no other handle or test run uses, e.g. "mmls-test:3f9a0c1e:". */
export function uniqueKeyPrefix(base = "mmls-test"): string {
  return `${base}:${randomBytes(4).toString("hex")}:`;
}

const HOW_TO_GET_REDIS =
  "Install redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) " +
  "or set REDIS_SERVER_BIN=/path/to/redis-server; or set REDIS_URL=redis://host:port to use a running " +
  "Redis; or start Docker so that the harness can run the redis:7 image through testcontainers.";

/**
 * Starts (or attaches to) a Redis for a test. Call `stop()` when done (useRedis() does it for you).
 * Order in mode "auto": REDIS_URL → redis-server binary → Docker (testcontainers) → error.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisHandle> {
  const env = options.env ?? process.env;
  const mode = options.mode ?? "auto";
  const persistence = options.persistence ?? "none";
  const keyPrefix = uniqueKeyPrefix(options.keyPrefixBase);
  const extraArgs = options.extraArgs ?? [];
  if (options.db !== undefined && !(Number.isInteger(options.db) && options.db >= 0)) {
    throw new Error(`startRedis: db must be a non-negative integer, got ${options.db}`);
  }

  const externalUrl = options.url ?? nonEmpty(env.REDIS_URL);
  if (mode === "external" || (mode === "auto" && externalUrl !== undefined)) {
    if (externalUrl === undefined)
      throw new Error('startRedis({ mode: "external" }) needs REDIS_URL or the url option');
    if (persistence !== "none") {
      throw new Error(`startRedis: persistence "${persistence}" cannot be applied to an external Redis`);
    }
    return ExternalRedis.connect(externalUrl, {
      ...(options.db === undefined ? {} : { db: options.db }),
      keyPrefix,
      flush: options.externalFlush ?? "prefix",
    });
  }

  const containerOptions = () => ({
    image: options.image ?? "redis:7",
    persistence,
    extraArgs,
    startTimeoutMs: options.startTimeoutMs ?? 120_000,
    db: options.db ?? 0,
    keyPrefix,
  });

  if (mode === "container") {
    const reason = await dockerUnavailableReason();
    if (reason !== undefined)
      throw new Error(`startRedis({ mode: "container" }): Docker is not reachable (${reason})`);
    return ContainerRedis.start(containerOptions());
  }

  const bin = await findRedisServer(options.redisServerBin ?? nonEmpty(env.REDIS_SERVER_BIN), env.PATH);
  if (bin !== undefined) {
    return ProcessRedis.start({
      bin,
      persistence,
      extraArgs,
      startTimeoutMs: options.startTimeoutMs ?? 10_000,
      db: options.db ?? 0,
      keyPrefix,
    });
  }
  if (mode === "process") {
    throw new Error(`startRedis({ mode: "process" }): no redis-server found on PATH. ${HOW_TO_GET_REDIS}`);
  }

  if (options.container !== false) {
    const reason = await dockerUnavailableReason();
    if (reason === undefined) return ContainerRedis.start(containerOptions());
    throw new Error(
      `startRedis: no Redis available — REDIS_URL is not set, no redis-server on PATH, and Docker is not ` +
        `reachable (${reason}). ${HOW_TO_GET_REDIS}`,
    );
  }
  throw new Error(
    `startRedis: no Redis available — REDIS_URL is not set and no redis-server on PATH ` +
      `(container fallback disabled). ${HOW_TO_GET_REDIS}`,
  );
}

/** Stops every Redis this process started through the harness (process and container modes). */
export async function stopAllRedis(): Promise<void> {
  await Promise.all([stopAllProcessRedis(), stopAllContainerRedis()]);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
