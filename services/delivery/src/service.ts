import websocket from "@fastify/websocket";
import { MemoryNonceStore, type NonceStore } from "@mastodon-mls/bridge";
import {
  RedisNonceStore,
  connectRedis,
  createRootLogger,
  createServiceApp,
  installOperationalRoutes,
  type Logger,
  type ServiceApp,
} from "@mastodon-mls/service-kit";
import type { DeliveryConfig } from "./config.js";
import { DEFAULT_LIMITS, type DeliveryContext, type DeliveryLimits } from "./context.js";
import { createDeliveryMetrics } from "./metrics.js";
import { LocalNotifier, type Notifier } from "./notifier.js";
import { groupRoutes } from "./routes/groups.js";
import { inboxRoutes } from "./routes/inbox.js";
import { invitationRoutes } from "./routes/invitations.js";
import { streamRoutes } from "./routes/stream.js";
import { MemoryDeliveryStore } from "./store/memory.js";
import { RedisDeliveryStore } from "./store/redis.js";
import type { DeliveryStore } from "./store/types.js";
import { StreamSessions } from "./stream.js";

const VERSION = "0.1.0";
/** Largest client frame: an auth frame with a 64 KiB cursor, or an ack. */
const MAX_FRAME_BYTES = 80 * 1024;

/** What tests and embedders may supply instead of what the config would make. */
export interface DeliveryDeps {
  logger?: Logger;
  store?: DeliveryStore;
  nonces?: NonceStore;
  notifier?: Notifier;
  now?: () => number;
  limits?: Partial<DeliveryLimits>;
}

export interface Delivery {
  app: ServiceApp;
  context: DeliveryContext;
  /** Starts listening on HOST:PORT; resolves to the URL it listens on. */
  listen(): Promise<string>;
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
  });
  const redis =
    config.store.kind === "redis" && !(deps.store && deps.nonces)
      ? connectRedis(config.store.url, log.child({ component: "redis" }))
      : undefined;
  const prefix = config.store.kind === "redis" ? config.store.prefix : "";
  const ctx: DeliveryContext = {
    config,
    log,
    store: deps.store ?? (redis ? new RedisDeliveryStore(redis, prefix) : new MemoryDeliveryStore()),
    nonces: deps.nonces ?? (redis ? new RedisNonceStore(redis, prefix) : new MemoryNonceStore()),
    notifier: deps.notifier ?? new LocalNotifier(),
    metrics: createDeliveryMetrics(metrics.registry),
    now: deps.now ?? Date.now,
    limits: { ...DEFAULT_LIMITS, ...deps.limits },
  };
  const sessions = new StreamSessions(ctx);

  // Registered first, so it runs last on close: the store and Redis outlive every request.
  app.addHook("onClose", async () => {
    await ctx.store.close();
    if (redis) await redis.quit().catch(() => redis.disconnect());
  });
  await app.register(websocket, {
    options: { maxPayload: MAX_FRAME_BYTES },
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
    listen: () => app.listen({ host: config.host, port: config.port }),
    close: () => app.close(),
  };
}
