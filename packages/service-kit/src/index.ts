export * from "./logger.js";
export * from "./config.js";
export * from "./redis.js";
export * from "./errorHandler.js";
export * from "./rawBody.js";
export * from "./deviceAuth.js";
export * from "./metrics.js";
export * from "./app.js";
