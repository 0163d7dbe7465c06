// Mastodon's Rack::Attack API throttles: requests under /api/ are counted per user (a token with a
// resource owner) or else per IP address, in fixed windows aligned to the epoch. Every API answer
// carries X-RateLimit-Limit/Remaining/Reset (Reset an ISO 8601 time with microseconds); past the limit
// the answer is 429 {"error":"Too many requests"}.
import type { FastifyInstance } from "fastify";
import type { InstanceState } from "../state/instance.js";
import { doorkeeperToken } from "./auth.js";
import { apiError } from "./errors.js";

export interface ThrottleOptions {
  readonly limit: number;
  readonly periodSeconds: number;
}

export interface RateLimitOptions {
  /** Requests with a user's token. Mastodon: 1500 per 5 minutes. */
  readonly authenticated: ThrottleOptions;
  /** Everything else, per IP address. Mastodon: 300 per 5 minutes. */
  readonly unauthenticated: ThrottleOptions;
}

export const MASTODON_RATE_LIMITS: RateLimitOptions = {
  authenticated: { limit: 1500, periodSeconds: 300 },
  unauthenticated: { limit: 300, periodSeconds: 300 },
};

/** Ruby's Time#iso8601(6) for UTC. */
function iso8601Micro(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class RateLimiter {
  private readonly counts = new Map<string, { window: number; count: number }>();

  constructor(public options: RateLimitOptions) {}

  /** Counts one request; returns the headers to send and whether it is over the limit. */
  hit(
    key: string,
    throttle: ThrottleOptions,
    nowMs = Date.now(),
  ): { headers: Record<string, string>; over: boolean } {
    const period = throttle.periodSeconds;
    const nowSeconds = Math.floor(nowMs / 1000);
    const window = Math.floor(nowSeconds / period);
    const entry = this.counts.get(key);
    const count = entry !== undefined && entry.window === window ? entry.count + 1 : 1;
    this.counts.set(key, { window, count });
    const resetMs = nowMs + (period - (nowSeconds % period)) * 1000;
    const over = count > throttle.limit;
    return {
      over,
      headers: {
        "x-ratelimit-limit": String(throttle.limit),
        "x-ratelimit-remaining": String(Math.max(0, throttle.limit - count)),
        "x-ratelimit-reset": iso8601Micro(resetMs),
      },
    };
  }

  reset(): void {
    this.counts.clear();
  }
}

export function installRateLimit(app: FastifyInstance, state: InstanceState, limiter: RateLimiter): void {
  app.addHook("onRequest", async (req, reply) => {
    if (!req.url.startsWith("/api/") || req.method === "OPTIONS") return;
    const user = doorkeeperToken(state, req)?.account ?? null;
    const { headers, over } =
      user !== null
        ? limiter.hit(`user:${user.id}`, limiter.options.authenticated)
        : limiter.hit(`ip:${req.ip}`, limiter.options.unauthenticated);
    if (over) throw apiError(429, "Too many requests", headers);
    reply.headers(headers);
  });
}
