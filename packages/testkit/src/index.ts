export {
  startRedis,
  stopAllRedis,
  uniqueKeyPrefix,
  type RedisMode,
  type StartRedisOptions,
} from "./redis.js";
export type { RedisHandle, RedisKind, RedisPersistence } from "./types.js";
export { RedisBinaryError, findRedisServer } from "./process-redis.js";
export { redisClient, closeRedisClients, openRedisClientCount, type RedisClientOptions } from "./clients.js";
export { freePort } from "./ports.js";
export {
  waitFor,
  deferred,
  withTimeout,
  WaitForTimeoutError,
  type WaitForOptions,
  type Deferred,
} from "./util.js";
export { readEnvFile } from "./envFile.js";
