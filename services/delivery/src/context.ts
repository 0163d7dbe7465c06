import type { NonceStore } from "@mastodon-mls/bridge";
import type { Logger } from "@mastodon-mls/service-kit";
import type { DeliveryConfig } from "./config.js";
import type { DeliveryMetrics } from "./metrics.js";
import type { Notifier } from "./notifier.js";
import type { DeliveryStore } from "./store/types.js";

/** Everything a route needs, made once from the config and handed to every route plugin. */
export interface DeliveryContext {
  config: DeliveryConfig;
  log: Logger;
  store: DeliveryStore;
  nonces: NonceStore;
  notifier: Notifier;
  metrics: DeliveryMetrics;
  /** Milliseconds since the Unix epoch. */
  now: () => number;
  limits: DeliveryLimits;
}

/** Knobs that are not configuration (no environment variable); tests lower them. */
export interface DeliveryLimits {
  /** Items per inbox page when the client names no limit, and per pushed frame. */
  pageItems: number;
  /** MLS bytes per inbox page or pushed frame (at least one item is always sent). */
  pageBytes: number;
  /** A stream whose unsent data exceeds this is closed with 4000 (resume). */
  streamBufferBytes: number;
  /** A stream that has not authenticated within this time is closed with 4001. */
  streamAuthMs: number;
}

export const DEFAULT_LIMITS: DeliveryLimits = {
  pageItems: 100,
  pageBytes: 2 * 1024 * 1024,
  streamBufferBytes: 8 * 1024 * 1024,
  streamAuthMs: 10_000,
};
