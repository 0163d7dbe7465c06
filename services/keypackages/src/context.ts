import type { NonceStore } from "@mastodon-mls/bridge";
import type { Logger } from "@mastodon-mls/service-kit";
import type { DirectoryConfig } from "./config.js";
import type { InstanceDomain } from "./mastodon/instanceDomain.js";
import type { TokenVerifier } from "./mastodon/tokenVerifier.js";
import type { DirectoryMetrics } from "./metrics.js";
import type { DirectoryLimiters } from "./rateLimits.js";
import type { DirectoryStore, StoreLimits } from "./store/directoryStore.js";

/** Everything a route needs, built once from the config and handed to every route plugin. */
export interface DirectoryContext {
  config: DirectoryConfig;
  log: Logger;
  store: DirectoryStore;
  limits: StoreLimits;
  nonces: NonceStore;
  instance: InstanceDomain;
  tokens: TokenVerifier;
  metrics: DirectoryMetrics;
  /** Each undefined when RATE_LIMITS=off. */
  limiters: DirectoryLimiters;
  /** Seconds since the Unix epoch. */
  now: () => number;
}
