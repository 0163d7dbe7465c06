export { createDelivery, type Delivery, type DeliveryDeps } from "./service.js";
export { loadDeliveryConfig, type DeliveryConfig, type RateLimitConfig, type StoreConfig } from "./config.js";
export { DEFAULT_LIMITS, type DeliveryContext, type DeliveryLimits } from "./context.js";
export {
  LocalNotifier,
  accountTopic,
  deviceTopic,
  groupTopic,
  type GroupEvent,
  type InboxEvent,
  type Notifier,
  type Topic,
} from "./notifier.js";
export { RedisNotifier } from "./redisNotifier.js";
export { SHARDS, shardOf } from "./channels.js";
export { MemoryDeliveryStore } from "./store/memory.js";
export { RedisDeliveryStore, type RedisStoreOptions } from "./store/redis.js";
export type * from "./store/types.js";
export { decodeCursor, encodeCursor, type Cursor } from "./cursor.js";
