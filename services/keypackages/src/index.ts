export { createDirectory, DIRECTORY_BODY_LIMIT, SERVICE_VERSION } from "./directory.js";
export type { Directory, DirectoryDeps } from "./directory.js";
export { loadDirectoryConfig, type DirectoryConfig } from "./config.js";
export type { DirectoryContext } from "./context.js";
export * from "./store/directoryStore.js";
export { MemoryDirectoryStore } from "./store/memoryStore.js";
export { RedisDirectoryStore } from "./store/redisStore.js";
export { RedisKeys } from "./store/redisKeys.js";
