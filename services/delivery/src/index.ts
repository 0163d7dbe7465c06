export { createDelivery, type Delivery, type DeliveryDeps } from "./service.js";
export { loadDeliveryConfig, type DeliveryConfig, type StoreConfig } from "./config.js";
export { DEFAULT_LIMITS, type DeliveryContext, type DeliveryLimits } from "./context.js";
export { LocalNotifier, type InboxEvent, type Notifier } from "./notifier.js";
export { MemoryDeliveryStore } from "./store/memory.js";
export { RedisDeliveryStore } from "./store/redis.js";
export type * from "./store/types.js";
export { decodeCursor, encodeCursor, type Cursor } from "./cursor.js";
