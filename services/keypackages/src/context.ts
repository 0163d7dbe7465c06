import type { Logger } from "@mastodon-mls/service-kit";
import type { DirectoryConfig } from "./config.js";
import type { InstanceDomain } from "./mastodon/instanceDomain.js";
import type { TokenVerifier } from "./mastodon/tokenVerifier.js";
import type { DirectoryMetrics } from "./metrics.js";
import type { Admitter, DirectoryLimiters } from "./rateLimits.js";
import type { DirectoryStore, StoreLimits } from "./store/directoryStore.js";

/** Everything a route needs, built once from the config and handed to every route plugin. */
export interface DirectoryContext {
  config: DirectoryConfig;
  log: Logger;
  store: DirectoryStore;
  limits: StoreLimits;
  /** Spends request nonces and counts the requester rate limits (README "Rate limits"). */
  admission: Admitter;
  /** The plugin-backed limiters, each undefined when RATE_LIMITS=off; claims count `target` with them. */
  limiters: DirectoryLimiters;
  instance: InstanceDomain;
  tokens: TokenVerifier;
  metrics: DirectoryMetrics;
  /** Seconds since the Unix epoch. */
  now: () => number;
}
