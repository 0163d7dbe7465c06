import { ProtocolError } from "@mastodon-mls/protocol";
import type { RateLimitConfig } from "./config.js";
import type { DeliveryMetrics } from "./metrics.js";
import { pruneOldest, type WindowCounter } from "./rateWindows.js";

/**
 * The limits (DESIGN §6, §10): submissions and commits per device, invitations per sending account and
 * per sending device (one budget each, same size), and invitations per receiving account.
 */
export type LimitName = "submissions" | "commits" | "invitations" | "invitationsReceived";

export interface RateLimits {
  /** Counts one request against `limit` for `key`; throws `429 rate_limited` {retry_after} when over. */
  take(limit: LimitName, key: string): Promise<void>;
}

/**
 * How many requests of a budget of `max` a replica takes from the shared count at once (decisions.md
 * D19): 1 (every request counted in Redis) up to a budget of 99, then a fiftieth of it, at most 25.
 */
export function leaseSize(max: number): number {
  return Math.max(1, Math.min(25, Math.floor(max / 50)));
}

/**
 * Leases this replica keeps per limit. At the bound, ended ones go, then the oldest until a tenth is free
 * (a live lease dropped is requests never made): pruning once per many claims, not on every one.
 */
const MAX_LEASES = 50_000;

interface Lease {
  /** Requests this replica may still let through in this window without asking. */
  left: number;
  /** performance.now() at which the window ends (no later than the shared count's). */
  until: number;
  /** The shared count had nothing left for this key in this window. */
  spent: boolean;
  /** A claim in flight for this key: others wait for it rather than claim again. */
  claiming?: Promise<unknown> | undefined;
}

/**
 * Fixed windows counted in a WindowCounter (Redis: shared by all replicas, so HTTP routes and `submit`
 * frames on every replica count against the same windows), taken in leases: a replica claims up to
 * `leaseSize(max)` requests at once and lets them through from memory until they are used or the window
 * ends. The shared count never grants more than `max` per window, whichever replicas ask; what a
 * replica leased and did not use is lost with the window, so a key whose requests alternate between R
 * replicas can be refused up to R × (lease − 1) requests early. A spent key is refused from memory
 * until its window ends.
 */
export function createRateLimits(
  counter: WindowCounter,
  config: RateLimitConfig,
  metrics: DeliveryMetrics,
  clock: () => number = () => performance.now(),
): RateLimits {
  const windowMs = config.windowSeconds * 1000;
  const budgets: Record<LimitName, number> = {
    submissions: config.submissions,
    commits: config.commits,
    invitations: config.invitations,
    invitationsReceived: config.invitationsReceived,
  };
  const leases: Record<LimitName, Map<string, Lease>> = {
    submissions: new Map(),
    commits: new Map(),
    invitations: new Map(),
    invitationsReceived: new Map(),
  };

  const refuse = (limit: LimitName, lease: Lease, now: number): ProtocolError => {
    metrics.rateLimited.inc({ limit });
    const retryAfter = Math.max(1, Math.ceil((lease.until - now) / 1000));
    return new ProtocolError("rate_limited", `Too many ${limit}; retry in ${retryAfter} s.`, {
      retry_after: retryAfter,
    });
  };

  /** Takes a new lease of `limit` for `key` from the shared count, this request's share already taken. */
  const claim = async (limit: LimitName, key: string, held: Map<string, Lease>): Promise<Lease> => {
    const max = budgets[limit];
    const size = leaseSize(max);
    const started = clock();
    const placeholder: Lease = { left: 0, until: Infinity, spent: false };
    const claimed = counter.claim(`${limit}:${key}`, size, windowMs);
    placeholder.claiming = claimed;
    held.delete(key);
    if (held.size >= MAX_LEASES) {
      const now = clock();
      pruneOldest(held, MAX_LEASES * 0.9, (l) => l.claiming === undefined && now >= l.until);
    }
    held.set(key, placeholder);
    try {
      const { total, ttlMs } = await claimed;
      // What this claim added that still fits in the budget; the rest of it counts but is never used.
      // This request takes the first of them before anyone else can see the lease.
      const granted = Math.max(0, Math.min(size, max - (total - size)));
      const lease: Lease = { left: Math.max(0, granted - 1), until: started + ttlMs, spent: granted === 0 };
      if (held.get(key) === placeholder) held.set(key, lease);
      return lease;
    } catch (e) {
      if (held.get(key) === placeholder) held.delete(key);
      throw e;
    } finally {
      placeholder.claiming = undefined;
    }
  };

  return {
    async take(limit, key) {
      const held = leases[limit];
      for (;;) {
        const now = clock();
        let lease = held.get(key);
        if (lease?.claiming) {
          // A claim that fails fails its waiters too, at once: while Redis is down, each request of a
          // key should not wait for the failures of all those queued before it.
          await lease.claiming;
          continue;
        }
        if (lease && now >= lease.until) lease = undefined;
        if (lease?.spent) throw refuse(limit, lease, now);
        if (lease && lease.left > 0) {
          lease.left--;
          return;
        }
        const claimed = await claim(limit, key, held);
        if (claimed.spent) throw refuse(limit, claimed, clock());
        return;
      }
    },
  };
}
