import { MemoryNonceStore } from "@mastodon-mls/bridge";
import { LIMITS } from "@mastodon-mls/protocol";
import {
  ConfigError,
  RedisNonceStore,
  childLogger,
  connectRedis,
  createRootLogger,
  createServiceApp,
  installOperationalRoutes,
  type Logger,
  type Redis,
  type ServiceApp,
} from "@mastodon-mls/service-kit";
import type { DirectoryConfig } from "./config.js";
import type { DirectoryContext } from "./context.js";
import { InstanceDomain } from "./mastodon/instanceDomain.js";
import { MastodonApi } from "./mastodon/mastodonApi.js";
import { TokenVerifier } from "./mastodon/tokenVerifier.js";
import { createDirectoryMetrics, type DirectoryMetrics } from "./metrics.js";
import { LimiterAdmitter, createLimiters, type NonceSpender } from "./rateLimits.js";
import { activityRoutes } from "./routes/activityRoutes.js";
import { decorateAuthentication } from "./routes/authentication.js";
import { claimRoutes } from "./routes/claimRoutes.js";
import { deviceListRoutes } from "./routes/deviceListRoutes.js";
import { deviceRoutes } from "./routes/deviceRoutes.js";
import { keyPackageRoutes } from "./routes/keyPackageRoutes.js";
import {
  DEFAULT_STORE_LIMITS,
  type DirectoryStore,
  type StoreLimits,
  type StoreStats,
} from "./store/directoryStore.js";
import { MemoryDirectoryStore } from "./store/memoryStore.js";
import { RedisKeys } from "./store/redisKeys.js";
import { RedisDirectoryStore } from "./store/redisStore.js";

export const SERVICE_VERSION = "0.1.0";

/** The largest body a route accepts: a full upload of base64url KeyPackages and a last-resort one. */
export const DIRECTORY_BODY_LIMIT =
  (LIMITS.keyPackagesPerUpload + 1) * (Math.ceil((LIMITS.keyPackageBytes * 4) / 3) + 8) + 4096;

/** What tests and embedders may swap; production passes nothing. */
export interface DirectoryDeps {
  logger?: Logger;
  /** Used instead of the store STORE selects; the caller keeps ownership of it. */
  store?: DirectoryStore;
  storeLimits?: Partial<StoreLimits>;
  /** Used for every call to Mastodon. */
  fetch?: typeof fetch;
  /** Seconds since the Unix epoch. */
  now?: () => number;
  /** Collect process metrics (off by default in tests that start many directories). */
  defaultMetrics?: boolean;
  /** A worker of a clustered directory (WORKERS > 1, `serveDirectory`): /metrics reports every worker. */
  clusterWorker?: boolean;
}

export interface Directory {
  app: ServiceApp;
  config: DirectoryConfig;
  context: DirectoryContext;
  /** Starts serving on HOST:PORT (PORT 0 picks a free one); resolves to the URL it listens on. */
  listen(): Promise<string>;
  /**
   * Purges expired KeyPackages now and refreshes the `keypackages_held` gauge; also runs every
   * SWEEP_INTERVAL_SECONDS once listening. Concurrent calls share one sweep.
   */
  sweep(): Promise<StoreStats>;
  /** Stops the sweeps, stops accepting, lets in-flight requests finish, then closes Redis. Idempotent. */
  close(): Promise<void>;
}

/** The library entry: a key-package directory built from its config, not yet listening. */
export async function createDirectory(config: DirectoryConfig, deps: DirectoryDeps = {}): Promise<Directory> {
  const log = deps.logger ?? createRootLogger({ level: config.logLevel, name: "keypackages" });
  const { app, metrics } = await createServiceApp({
    name: "keypackages",
    title: "mastodon-mls key-package directory",
    description: "Per-device MLS KeyPackages of one Mastodon instance's accounts, each handed out once.",
    version: SERVICE_VERSION,
    logger: log,
    bodyLimit: DIRECTORY_BODY_LIMIT,
    defaultMetrics: deps.defaultMetrics ?? true,
    clusterWorker: deps.clusterWorker ?? false,
  });

  const limits = { ...DEFAULT_STORE_LIMITS, ...deps.storeLimits };
  const storage = openStorage(config, deps, limits, log);
  const now = deps.now ?? (() => Math.floor(Date.now() / 1000));
  const directoryMetrics = createDirectoryMetrics(metrics.registry);
  const sweeper = new Sweeper(storage.store, directoryMetrics, now, childLogger(log, "sweep"));
  // onClose hooks run once the server has closed, after in-flight requests finished: only then Redis goes.
  app.addHook("onClose", async () => {
    await sweeper.stop();
    if (storage.redis) await closeRedis(storage.redis);
  });

  const mastodon = new MastodonApi({
    baseUrl: config.mastodonUrl,
    timeoutMs: config.mastodonTimeoutMs,
    fetch: deps.fetch,
    log: childLogger(log, "mastodon"),
  });
  const instance = new InstanceDomain(mastodon, config.instanceDomain);
  const limiters = await createLimiters(app, {
    limits: config.rateLimits,
    redis: storage.redis && { connection: storage.redis, keys: new RedisKeys(config.redisPrefix) },
  });
  const context: DirectoryContext = {
    config,
    log,
    store: storage.store,
    limits,
    admission: new LimiterAdmitter(storage.nonces, limiters),
    limiters,
    instance,
    tokens: new TokenVerifier(mastodon, instance, { now: () => now() * 1000 }),
    metrics: directoryMetrics,
    now,
  };

  installOperationalRoutes(app, {
    ready: () => storage.store.ready(),
    wellKnown: () =>
      config.deliveryUrl ? { directory: config.publicUrl, delivery: config.deliveryUrl } : undefined,
  });
  decorateAuthentication(app);
  await app.register(deviceRoutes, { ctx: context });
  await app.register(deviceListRoutes, { ctx: context });
  await app.register(keyPackageRoutes, { ctx: context });
  await app.register(claimRoutes, { ctx: context });
  await app.register(activityRoutes, { ctx: context });

  let closing: Promise<void> | undefined;
  return {
    app,
    config,
    context,
    async listen() {
      const url = await app.listen({ host: config.host, port: config.port });
      sweeper.start(config.sweepIntervalSeconds);
      return url;
    },
    sweep: () => sweeper.run(),
    close() {
      closing ??= app.close();
      return closing;
    },
  };
}

/**
 * The periodic sweep of expired KeyPackages (README "Expiry"). One at a time; a failed sweep (Redis
 * down) is logged and counted, and the next interval tries again.
 */
class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<StoreStats> | undefined;
  private stopped = false;

  constructor(
    private readonly store: DirectoryStore,
    private readonly metrics: DirectoryMetrics,
    private readonly now: () => number,
    private readonly log: Logger,
  ) {}

  start(intervalSeconds: number): void {
    if (intervalSeconds === 0 || this.timer || this.stopped) return;
    const tick = () => {
      this.run().catch(() => {
        // Logged and counted by run().
      });
    };
    tick();
    this.timer = setInterval(tick, intervalSeconds * 1000);
    this.timer.unref();
  }

  run(): Promise<StoreStats> {
    this.running ??= this.sweep().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  private async sweep(): Promise<StoreStats> {
    try {
      const stats = await this.store.sweep(this.now());
      this.metrics.held.set({ kind: "ordinary" }, stats.keyPackages);
      this.metrics.held.set({ kind: "last_resort" }, stats.lastResort);
      this.metrics.purged.inc(stats.purged);
      this.metrics.sweeps.inc({ result: "ok" });
      if (stats.purged > 0) this.log.info({ purged: stats.purged }, "expired KeyPackages purged");
      return stats;
    } catch (err) {
      this.metrics.sweeps.inc({ result: "failed" });
      this.log.warn({ err: { message: (err as Error).message } }, "sweep failed");
      throw err;
    }
  }
}

interface Storage {
  store: DirectoryStore;
  nonces: NonceSpender;
  /**
   * The one connection of this directory, shared by the store, the nonces and the rate limits; absent
   * for STORE=memory.
   */
  redis: Redis | undefined;
}

function openStorage(
  config: DirectoryConfig,
  deps: DirectoryDeps,
  limits: StoreLimits,
  log: Logger,
): Storage {
  if (config.store === "memory") {
    return {
      store: deps.store ?? new MemoryDirectoryStore(limits),
      nonces: new MemoryNonceStore(),
      redis: undefined,
    };
  }
  if (!config.redisUrl) throw new ConfigError("REDIS_URL is required when STORE=redis");
  const redis = connectRedis(config.redisUrl, childLogger(log, "redis"), {
    connectionName: "keypackages",
    // Commands of every request in flight go out together, one write per turn of the event loop instead
    // of one write system call per command, which profiles showed as the largest cost after the
    // signature check (README "Benchmark").
    enableAutoPipelining: true,
  });
  return {
    store: deps.store ?? new RedisDirectoryStore(redis, config.redisPrefix, limits),
    nonces: new RedisNonceStore(redis, config.redisPrefix),
    redis,
  };
}

/** QUIT lets queued replies arrive; a connection that is down is dropped instead of waiting for it. */
async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status !== "ready") {
    redis.disconnect();
    return;
  }
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
