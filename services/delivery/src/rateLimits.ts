import { ProtocolError } from "@mastodon-mls/protocol";
import type { FastifyRequest } from "fastify";
import type { ServiceApp } from "@mastodon-mls/service-kit";
import type { RateLimitConfig } from "./config.js";
import type { DeliveryMetrics } from "./metrics.js";

/**
 * The limits (DESIGN §6, §10): submissions and commits per device, invitations per sending account and
 * per sending device (one budget each, same size), and invitations per receiving account.
 */
export type LimitName = "submissions" | "commits" | "invitations" | "invitationsReceived";

export interface RateLimits {
  /** Counts one request against `limit` for `key`; throws `429 rate_limited` {retry_after} when over. */
  take(limit: LimitName, key: string): Promise<void>;
}

/** What the limiter reads from its "request": only the key we give it. */
interface Keyed {
  routeOptions: Record<string, never>;
  limitKey: string;
}

/**
 * Built on @fastify/rate-limit's programmatic limiter (`createRateLimit`), so HTTP routes and `submit`
 * frames on the WebSocket count against the same windows, in Redis when STORE=redis (shared by all
 * replicas) or in memory.
 */
export function createRateLimits(
  app: ServiceApp,
  config: RateLimitConfig,
  metrics: DeliveryMetrics,
): RateLimits {
  const make = (max: number) =>
    app.createRateLimit({
      max,
      timeWindow: config.windowSeconds * 1000,
      keyGenerator: (req: FastifyRequest) => (req as unknown as Keyed).limitKey,
    });
  const limiters: Record<LimitName, ReturnType<typeof make>> = {
    submissions: make(config.submissions),
    commits: make(config.commits),
    invitations: make(config.invitations),
    invitationsReceived: make(config.invitationsReceived),
  };
  return {
    async take(limit, key) {
      const keyed: Keyed = { routeOptions: {}, limitKey: `${limit}:${key}` };
      const result = await limiters[limit](keyed as unknown as FastifyRequest);
      if (result.isAllowed || !result.isExceeded) return;
      metrics.rateLimited.inc({ limit });
      const retryAfter = Math.max(1, result.ttlInSeconds);
      throw new ProtocolError("rate_limited", `Too many ${limit}; retry in ${retryAfter} s.`, {
        retry_after: retryAfter,
      });
    },
  };
}
