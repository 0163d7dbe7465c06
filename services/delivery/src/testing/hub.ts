import type { Socket } from "node:net";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { silentLogger } from "@mastodon-mls/service-kit";
import { loadDeliveryConfig } from "../config.js";
import type { DeliveryLimits } from "../context.js";
import { createDelivery, type Delivery, type DeliveryDeps } from "../service.js";
import type { TestDirectory } from "./directory.js";
import type { TestDevice } from "./mls.js";
import { HubClient } from "./client.js";
import type { MemoryDeliveryStore } from "../store/memory.js";

export type StoreKind = "memory" | "redis";

/** The origin clients sign for; the hub is reached on 127.0.0.1 but verifies against this. */
export const HUB_ORIGIN = "http://hub.a.test";

export interface TestHub {
  delivery: Delivery;
  /** http://127.0.0.1:<port> */
  url: string;
  /** The Redis key prefix (replicas of one hub share it). */
  prefix: string | undefined;
  /** The instance's directory the hub asks, if it was given one. */
  directory: TestDirectory | undefined;
  client(device: TestDevice): HubClient;
  close(): Promise<void>;
  /** Drops every TCP connection at once (no WebSocket close handshake), then closes: a crashed replica. */
  kill(): Promise<void>;
}

export interface HubOptions {
  redis?: RedisHandle;
  /** Share this Redis prefix with another hub: two replicas of one service. */
  prefix?: string;
  limits?: Partial<DeliveryLimits>;
  now?: () => number;
  /** More environment variables (RATE_*, RETENTION_*, …). */
  env?: Record<string, string>;
  /**
   * The instance's directory (DIRECTORY_URL): then devices of a.test accounts must be registered there
   * to read their inbox or send invitations. Without one the hub queues no invitations.
   */
  directory?: TestDirectory;
  /** How long a request may take to arrive (service-kit's slow-client limit). */
  server?: DeliveryDeps["server"];
  /** With the memory store: this instance of it (a subclass with hooks a test steers). */
  memoryStore?: MemoryDeliveryStore;
}

/** A delivery service on port 0, with the memory store or a Redis started for it (or shared). */
export async function startHub(store: StoreKind, opts: HubOptions = {}): Promise<TestHub> {
  const redis = store === "redis" ? (opts.redis ?? (await startRedis())) : undefined;
  // A fresh prefix per hub unless given, so hubs sharing one Redis do not see each other's groups.
  const prefix = redis
    ? (opts.prefix ?? `${redis.keyPrefix}${Math.random().toString(36).slice(2, 8)}:`)
    : undefined;
  const config = loadDeliveryConfig({
    PORT: "0",
    PUBLIC_URL: HUB_ORIGIN,
    INSTANCE_DOMAIN: "a.test",
    DIRECTORY_URL: opts.directory?.url,
    LOG_LEVEL: "silent",
    STORE: store,
    REDIS_URL: redis?.url,
    REDIS_PREFIX: prefix,
    ...opts.env,
  });
  const delivery = await createDelivery(config, {
    logger: silentLogger(),
    limits: opts.limits,
    server: opts.server,
    ...(opts.now ? { now: opts.now } : {}),
    ...(store === "memory" && opts.memoryStore ? { store: opts.memoryStore } : {}),
  });
  const sockets = new Set<Socket>();
  delivery.app.server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  const url = await delivery.listen();
  const close = async () => {
    await delivery.close();
    if (redis && !opts.redis) await redis.stop();
  };
  return {
    delivery,
    url,
    prefix,
    directory: opts.directory,
    client: (device) => new HubClient(url, HUB_ORIGIN, device.signer),
    close,
    kill: async () => {
      for (const socket of sockets) socket.destroy();
      await close();
    },
  };
}

/** A clock tests move by hand. */
export function manualClock(start = Date.now()) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}
