import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { silentLogger } from "@mastodon-mls/service-kit";
import { loadDeliveryConfig } from "../config.js";
import type { DeliveryLimits } from "../context.js";
import { createDelivery, type Delivery } from "../service.js";
import type { TestDevice } from "./mls.js";
import { HubClient } from "./client.js";

export type StoreKind = "memory" | "redis";

/** The origin clients sign for; the hub is reached on 127.0.0.1 but verifies against this. */
export const HUB_ORIGIN = "http://hub.a.test";

export interface TestHub {
  delivery: Delivery;
  /** http://127.0.0.1:<port> */
  url: string;
  client(device: TestDevice): HubClient;
  close(): Promise<void>;
}

/** A delivery service on port 0, with the memory store or a Redis started for it (or shared). */
export async function startHub(
  store: StoreKind,
  opts: { redis?: RedisHandle; limits?: Partial<DeliveryLimits> } = {},
): Promise<TestHub> {
  const redis = store === "redis" ? (opts.redis ?? (await startRedis())) : undefined;
  const config = loadDeliveryConfig({
    PORT: "0",
    PUBLIC_URL: HUB_ORIGIN,
    INSTANCE_DOMAIN: "a.test",
    DIRECTORY_URL: "http://directory.a.test",
    LOG_LEVEL: "silent",
    STORE: store,
    REDIS_URL: redis?.url,
    // A fresh prefix per hub, so hubs sharing one Redis do not see each other's groups.
    REDIS_PREFIX: redis ? `${redis.keyPrefix}${Math.random().toString(36).slice(2, 8)}:` : undefined,
  });
  const delivery = await createDelivery(config, { logger: silentLogger(), limits: opts.limits });
  const url = await delivery.listen();
  return {
    delivery,
    url,
    client: (device) => new HubClient(url, HUB_ORIGIN, device.signer),
    close: async () => {
      await delivery.close();
      if (redis && !opts.redis) await redis.stop();
    },
  };
}
