import type { NonceStore } from "@mastodon-mls/bridge";
import { LIMITS } from "@mastodon-mls/protocol";
import type { Logger } from "@mastodon-mls/service-kit";
import type { DeliveryConfig } from "./config.js";
import type { DirectoryDevices } from "./directoryDevices.js";
import type { DeliveryMetrics } from "./metrics.js";
import type { Notifier } from "./notifier.js";
import type { RateLimits } from "./rateLimits.js";
import type { DeliveryStore } from "./store/types.js";

/** Everything a route needs, made once from the config and handed to every route plugin. */
export interface DeliveryContext {
  config: DeliveryConfig;
  log: Logger;
  store: DeliveryStore;
  nonces: NonceStore;
  notifier: Notifier;
  metrics: DeliveryMetrics;
  rateLimits: RateLimits;
  /** The devices of this instance's accounts, as its directory lists them; undefined without DIRECTORY_URL. */
  directory: DirectoryDevices | undefined;
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
  /**
   * Every stream is pinged this often; one that has not answered the previous ping (nor sent a frame)
   * since is dropped: its peer is gone without a close, and nothing else would notice on an idle stream.
   */
  streamPingMs: number;
  /** `submit` frames of one stream waiting for their answer; more are refused (rate_limited). */
  streamSubmitQueue: number;
  /** Text (message and Welcome) of the `submit` frames waiting on one stream; more is refused the same way. */
  streamSubmitQueueBytes: number;
  /** Groups a device may be in at this hub (created, or added to by a commit). */
  groupsPerDevice: number;
  /** Groups (or accounts) looked at per retention sweep step. */
  sweepBatch: number;
  /**
   * A stream that sent a frame less than this long ago holds new pushed items until then, so that under
   * load items leave several to a frame (one write each) instead of one each. An idle stream sends at once.
   * From PUSH_COALESCE_MS unless a test sets it.
   */
  pushCoalesceMs: number;
  /** Accounts whose device registrations are cached (the least recently used go first). */
  directoryCacheAccounts: number;
  /** A device missing from a cached answer younger than this is refused without asking the directory again. */
  directoryMissRefreshMs: number;
  /** How long a request to the directory may take. */
  directoryTimeoutMs: number;
}

export const DEFAULT_LIMITS: DeliveryLimits = {
  pageItems: 100,
  pageBytes: 2 * 1024 * 1024,
  streamBufferBytes: 8 * 1024 * 1024,
  streamAuthMs: 10_000,
  // Well within the proxy's idle timeout for WebSockets (infra/nginx: 1 h) and common NAT timeouts.
  streamPingMs: 30_000,
  streamSubmitQueue: 64,
  streamSubmitQueueBytes: 8 * 1024 * 1024,
  groupsPerDevice: LIMITS.groupsPerDevice,
  sweepBatch: 1000,
  pushCoalesceMs: 5,
  directoryCacheAccounts: 10_000,
  directoryMissRefreshMs: 1000,
  directoryTimeoutMs: 5000,
};
