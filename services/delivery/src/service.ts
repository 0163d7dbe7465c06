import websocket from "@fastify/websocket";
import { MemoryNonceStore, type NonceStore } from "@mastodon-mls/bridge";
import { LIMITS, ProtocolError } from "@mastodon-mls/protocol";
import {
  RedisNonceStore,
  connectRedis,
  createRootLogger,
  createServiceApp,
  installOperationalRoutes,
  type Logger,
  type ServiceApp,
  type ServiceAppOptions,
} from "@mastodon-mls/service-kit";
import type { DeliveryConfig } from "./config.js";
import { DEFAULT_LIMITS, type DeliveryContext, type DeliveryLimits } from "./context.js";
import { DirectoryDevices } from "./directoryDevices.js";
import { createDeliveryMetrics } from "./metrics.js";
import { LocalNotifier, type Notifier } from "./notifier.js";
import { createRateLimits } from "./rateLimits.js";
import { MemoryWindowCounter, RedisWindowCounter } from "./rateWindows.js";
import { RedisNotifier } from "./redisNotifier.js";
import { groupRoutes } from "./routes/groups.js";
import { inboxRoutes } from "./routes/inbox.js";
import { invitationRoutes } from "./routes/invitations.js";
import { streamRoutes } from "./routes/stream.js";
import { MemoryDeliveryStore } from "./store/memory.js";
import { RedisDeliveryStore } from "./store/redis.js";
import type { DeliveryStore, SweepOutcome } from "./store/types.js";
import { StreamSessions } from "./stream.js";

const VERSION = "0.1.0";
/** Largest client frame: a `submit` with a commit and its Welcome, as an HTTP body may carry them. */
const MAX_FRAME_BYTES = LIMITS.bodyBytes;
/**
 * closeTimeout: how long a socket waits for the peer's answer to our close frame before it is destroyed.
 * ws's default is 30 s, and shutdown waits for every socket: one peer that never answers held it past
 * Fastify's 10 s for close hooks (close failed, exit 1) and the unit's TimeoutStopSec. (ws reads the
 * option since 8.19; @types/ws does not list it yet, hence a variable rather than a literal.)
 */
const WS_OPTIONS = { maxPayload: MAX_FRAME_BYTES, closeTimeout: 3_000 };
/** Sweep rounds per run at most (each deletes up to `sweepBatch` items per group or account). */
const MAX_SWEEP_ROUNDS = 100;

/** What tests and embedders may supply instead of what the config would make. */
export interface DeliveryDeps {
  logger?: Logger;
  store?: DeliveryStore;
  nonces?: NonceStore;
  notifier?: Notifier;
  now?: () => number;
  limits?: Partial<DeliveryLimits>;
  /** Slow-client limits of the HTTP server (service-kit's defaults otherwise); tests shorten them. */
  server?: Pick<ServiceAppOptions, "requestTimeoutMs" | "timeoutCheckMs">;
}

export interface Delivery {
  app: ServiceApp;
  context: DeliveryContext;
  sessions: StreamSessions;
  /** Starts listening on HOST:PORT; resolves to the URL it listens on. */
  listen(): Promise<string>;
  /** Deletes what is older than RETENTION_SECONDS now (also run every RETENTION_SWEEP_SECONDS). */
  sweep(): Promise<SweepOutcome>;
  /**
   * Asks the directory again about the accounts of open streams whose answer is older than
   * DIRECTORY_CACHE_SECONDS, closing the streams of devices it no longer lists (also run that often).
   */
  recheckStreams(): Promise<void>;
  /** Stops accepting, closes WebSockets with 4000, finishes in-flight requests, then closes Redis. */
  close(): Promise<void>;
}

/** The delivery service as a library: one context from the config, handed to every route plugin. */
export async function createDelivery(config: DeliveryConfig, deps: DeliveryDeps = {}): Promise<Delivery> {
  const log = deps.logger ?? createRootLogger({ level: config.logLevel, name: "delivery" });
  const { app, metrics } = await createServiceApp({
    name: "delivery",
    title: "mastodon-mls delivery service",
    description: "The hub of the MLS groups created on it, and the inbox of its instance's devices.",
    version: VERSION,
    logger: log,
    ...deps.server,
  });
  const redisConfig = config.store.kind === "redis" ? config.store : undefined;
  // Auto-pipelining: the commands of one event-loop turn (many submissions, acks, reads) leave in one
  // write instead of one each; order per connection is kept.
  const redis =
    redisConfig && !(deps.store && deps.nonces && deps.notifier)
      ? connectRedis(redisConfig.url, log.child({ component: "redis" }), { enableAutoPipelining: true })
      : undefined;
  const prefix = redisConfig?.prefix ?? "";
  // Pub/sub needs a connection of its own (a subscribed connection runs no other command).
  const subscriber =
    redis && redisConfig && !deps.notifier
      ? connectRedis(redisConfig.url, log.child({ component: "redis-pubsub" }), {
          maxRetriesPerRequest: null,
          // A SUBSCRIBE waits for Redis to come back (RedisNotifier keeps its promise per channel).
          commandTimeout: undefined,
        })
      : undefined;
  const notifier =
    deps.notifier ??
    (redis && subscriber ? new RedisNotifier(redis, subscriber, prefix, log) : new LocalNotifier());
  // Past an epoch's commit leaving the log, its winner is kept while application messages of that epoch
  // are still taken (a member that far behind may still commit for it and should hear who won).
  const winnerEpochs = config.appEpochWindow + 1;
  // With the RedisNotifier, the store announces each entry in the script that appends it.
  const store =
    deps.store ??
    (redis
      ? new RedisDeliveryStore(redis, prefix, { announce: subscriber !== undefined, winnerEpochs })
      : new MemoryDeliveryStore({ winnerEpochs }));

  // Registered first, so it runs last on close: the store and Redis outlive every request.
  app.addHook("onClose", async () => {
    await notifier.close();
    await store.close();
    if (redis) await redis.quit().catch(() => redis.disconnect());
  });
  // 429s carry Retry-After as well as `retry_after` in the body.
  app.addHook("onError", async (_req, reply, err) => {
    if (err instanceof ProtocolError && err.code === "rate_limited") {
      const seconds = err.details?.retry_after;
      reply.header("retry-after", typeof seconds === "number" ? String(seconds) : "1");
    }
  });
  const deliveryMetrics = createDeliveryMetrics(metrics.registry);
  const limits: DeliveryLimits = { ...DEFAULT_LIMITS, pushCoalesceMs: config.pushCoalesceMs, ...deps.limits };
  const now = deps.now ?? Date.now;
  const directory = config.directoryUrl
    ? new DirectoryDevices({
        directoryUrl: config.directoryUrl,
        ttlMs: config.directoryCacheSeconds * 1000,
        missRefreshMs: limits.directoryMissRefreshMs,
        maxAccounts: limits.directoryCacheAccounts,
        timeoutMs: limits.directoryTimeoutMs,
        now,
        log: log.child({ component: "directory" }),
        metrics: deliveryMetrics,
      })
    : undefined;
  const ctx: DeliveryContext = {
    config,
    log,
    store,
    nonces: deps.nonces ?? (redis ? new RedisNonceStore(redis, prefix) : new MemoryNonceStore()),
    notifier,
    metrics: deliveryMetrics,
    rateLimits: createRateLimits(
      redis ? new RedisWindowCounter(redis, prefix) : new MemoryWindowCounter(),
      config.rateLimits,
      deliveryMetrics,
    ),
    directory,
    now,
    limits,
  };
  const sessions = new StreamSessions(ctx);

  let sweeping: Promise<SweepOutcome> | undefined;
  const sweep = (): Promise<SweepOutcome> => {
    sweeping ??= (async () => {
      const total: SweepOutcome = { entries: 0, invitations: 0 };
      try {
        for (let round = 0; round < MAX_SWEEP_ROUNDS; round++) {
          const now = ctx.now();
          const r = await ctx.store.sweep(now - config.retentionSeconds * 1000, now, ctx.limits.sweepBatch);
          total.entries += r.entries;
          total.invitations += r.invitations;
          if (r.entries + r.invitations === 0) break;
        }
      } finally {
        sweeping = undefined;
      }
      if (total.entries > 0) ctx.metrics.retained.inc({ cause: "age" }, total.entries);
      if (total.invitations > 0) ctx.metrics.invitationsDeleted.inc({ cause: "age" }, total.invitations);
      if (total.entries + total.invitations > 0) ctx.log.info(total, "retention: deleted old items");
      return total;
    })();
    return sweeping;
  };
  const sweeper = setInterval(() => {
    sweep().catch((e: unknown) =>
      ctx.log.warn({ err: e instanceof Error ? e.message : String(e) }, "retention sweep failed"),
    );
  }, config.sweepSeconds * 1000);
  sweeper.unref();
  app.addHook("onClose", async () => {
    clearInterval(sweeper);
    await sweeping?.catch(() => undefined);
  });

  // Expired certificates, and with a directory revoked devices: their open streams close.
  const rechecker = setInterval(() => void sessions.recheck(), config.directoryCacheSeconds * 1000);
  rechecker.unref();
  app.addHook("onClose", async () => clearInterval(rechecker));

  await app.register(websocket, {
    options: WS_OPTIONS,
    preClose(done) {
      sessions.closeAll("server shutting down");
      // ws calls back once every socket has finished its closing handshake (or timed out).
      this.websocketServer.close(() => done());
    },
  });
  installOperationalRoutes(app, {
    ready: () => ctx.store.ready(),
    wellKnown: () =>
      config.directoryUrl ? { directory: config.directoryUrl, delivery: config.publicUrl } : undefined,
  });
  await app.register(groupRoutes(ctx));
  await app.register(invitationRoutes(ctx));
  await app.register(inboxRoutes(ctx));
  await app.register(streamRoutes(sessions));

  return {
    app,
    context: ctx,
    sessions,
    listen: () => app.listen({ host: config.host, port: config.port }),
    sweep,
    recheckStreams: () => sessions.recheck(),
    close: () => app.close(),
  };
}
