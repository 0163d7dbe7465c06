import { MemoryNonceStore, type NonceStore } from "@mastodon-mls/bridge";
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
import { createDirectoryMetrics } from "./metrics.js";
import { decorateAuthentication } from "./routes/authentication.js";
import { claimRoutes } from "./routes/claimRoutes.js";
import { deviceRoutes } from "./routes/deviceRoutes.js";
import { keyPackageRoutes } from "./routes/keyPackageRoutes.js";
import { DEFAULT_STORE_LIMITS, type DirectoryStore, type StoreLimits } from "./store/directoryStore.js";
import { MemoryDirectoryStore } from "./store/memoryStore.js";
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
}

export interface Directory {
  app: ServiceApp;
  config: DirectoryConfig;
  context: DirectoryContext;
  /** Starts serving on HOST:PORT (PORT 0 picks a free one); resolves to the URL it listens on. */
  listen(): Promise<string>;
  /** Stops accepting, lets in-flight requests finish, then closes Redis. Idempotent. */
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
  });

  const limits = { ...DEFAULT_STORE_LIMITS, ...deps.storeLimits };
  const storage = openStorage(config, deps, limits, log);
  // onClose hooks run once the server has closed, after in-flight requests finished: only then Redis goes.
  app.addHook("onClose", async () => {
    if (storage.redis) await closeRedis(storage.redis);
  });

  const mastodon = new MastodonApi({
    baseUrl: config.mastodonUrl,
    timeoutMs: config.mastodonTimeoutMs,
    fetch: deps.fetch,
    log: childLogger(log, "mastodon"),
  });
  const instance = new InstanceDomain(mastodon, config.instanceDomain);
  const now = deps.now ?? (() => Math.floor(Date.now() / 1000));
  const context: DirectoryContext = {
    config,
    log,
    store: storage.store,
    limits,
    nonces: storage.nonces,
    instance,
    tokens: new TokenVerifier(mastodon, instance, { now: () => now() * 1000 }),
    metrics: createDirectoryMetrics(metrics.registry),
    now,
  };

  installOperationalRoutes(app, {
    ready: () => storage.store.ready(),
    wellKnown: () =>
      config.deliveryUrl ? { directory: config.publicUrl, delivery: config.deliveryUrl } : undefined,
  });
  decorateAuthentication(app);
  await app.register(deviceRoutes, { ctx: context });
  await app.register(keyPackageRoutes, { ctx: context });
  await app.register(claimRoutes, { ctx: context });

  let closing: Promise<void> | undefined;
  return {
    app,
    config,
    context,
    async listen() {
      return app.listen({ host: config.host, port: config.port });
    },
    close() {
      closing ??= app.close();
      return closing;
    },
  };
}

interface Storage {
  store: DirectoryStore;
  nonces: NonceStore;
  /** The one connection of this directory, shared by the store and the nonces; absent for STORE=memory. */
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
  const redis = connectRedis(config.redisUrl, childLogger(log, "redis"), { connectionName: "keypackages" });
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
