import fc from "fast-check";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { redisClient } from "@mastodon-mls/testkit";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import type { RateLimitConfig } from "./config.js";
import { createDeliveryMetrics } from "./metrics.js";
import { createRateLimits, leaseSize, type RateLimits } from "./rateLimits.js";
import { MemoryWindowCounter, RedisWindowCounter, pruneOldest, type WindowCounter } from "./rateWindows.js";

// The limiter of D19: fixed windows counted in Redis (or memory), taken by each replica in leases.
// Two limiters on one counter stand for two replicas; a manual clock moves windows on.

const WINDOW_S = 60;

function config(submissions: number): RateLimitConfig {
  return { windowSeconds: WINDOW_S, submissions, commits: 2, invitations: 2, invitationsReceived: 2 };
}

function manualClock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** A counter that counts its claims (the requests that would reach Redis). */
class CountingCounter implements WindowCounter {
  claims = 0;
  failNext = false;
  constructor(private readonly inner: WindowCounter) {}
  async claim(key: string, n: number, windowMs: number) {
    this.claims++;
    if (this.failNext) {
      this.failNext = false;
      throw new Error("connection lost");
    }
    return this.inner.claim(key, n, windowMs);
  }
}

function limiter(counter: WindowCounter, max: number, clock: () => number) {
  const registry = new Registry();
  const metrics = createDeliveryMetrics(registry);
  return { limits: createRateLimits(counter, config(max), metrics, clock), registry };
}

/** How many of `n` takes (one after the other) pass; the refusals must be 429s. */
async function passes(limits: RateLimits, n: number, key = "dev"): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    try {
      await limits.take("submissions", key);
      ok++;
    } catch (e) {
      if (!(e instanceof ProtocolError) || e.code !== "rate_limited") throw e;
    }
  }
  return ok;
}

describe("leaseSize", () => {
  it("counts every request of small budgets and leases a fiftieth of large ones, at most 25", () => {
    expect([1, 60, 99, 100, 149, 150, 1200, 1250, 100_000].map(leaseSize)).toEqual([
      1, 1, 1, 2, 2, 3, 24, 25, 25,
    ]);
  });
});

describe("rate limits in memory", () => {
  it("lets exactly a small budget through, then refuses with the time left until the window ends", async () => {
    const clock = manualClock();
    const counter = new CountingCounter(new MemoryWindowCounter(100, clock.now));
    const { limits, registry } = limiter(counter, 6, clock.now);
    expect(await passes(limits, 6)).toBe(6);
    clock.advance(20_000);
    const refused = await limits.take("submissions", "dev").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ProtocolError);
    expect((refused as ProtocolError).details).toEqual({ retry_after: 40 });
    // A spent key is refused from memory: no more claims until the window ends.
    const claims = counter.claims;
    expect(await passes(limits, 5)).toBe(0);
    expect(counter.claims).toBe(claims);
    expect(await registry.metrics()).toMatch(/delivery_rate_limited_total\{limit="submissions"\} 6/);
    // Other keys and other limits have budgets of their own.
    expect(await passes(limits, 6, "other")).toBe(6);
    await expect(limits.take("commits", "dev")).resolves.toBeUndefined();
    clock.advance(40_000);
    expect(await passes(limits, 7)).toBe(6);
  });

  it("takes a large budget in leases: one claim per lease, never more than the budget", async () => {
    const clock = manualClock();
    const counter = new CountingCounter(new MemoryWindowCounter(100, clock.now));
    const { limits } = limiter(counter, 1250, clock.now);
    expect(await passes(limits, 1300)).toBe(1250);
    // 50 leases of 25, then one claim that found the budget spent.
    expect(counter.claims).toBe(51);
  });

  it("lets concurrent requests of one key share a claim, and grants exactly the budget", async () => {
    const clock = manualClock();
    const counter = new CountingCounter(new MemoryWindowCounter(100, clock.now));
    const { limits } = limiter(counter, 1250, clock.now);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 2000 }, () => limits.take("submissions", "dev")),
    );
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1250);
    for (const o of outcomes) {
      if (o.status === "rejected") expect((o.reason as ProtocolError).code).toBe("rate_limited");
    }
    expect(counter.claims).toBeLessThanOrEqual(52);
  });

  it("fails the requests waiting for a claim that fails, at once, with its error", async () => {
    const clock = manualClock();
    const counter = new CountingCounter(new MemoryWindowCounter(100, clock.now));
    const { limits } = limiter(counter, 6, clock.now);
    counter.failNext = true;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, () => limits.take("submissions", "dev")),
    );
    // One claim for all twenty (Redis down: ioredis takes seconds to give up on each command).
    expect(counter.claims).toBe(1);
    for (const o of outcomes) {
      expect(o.status).toBe("rejected");
      expect(((o as PromiseRejectedResult).reason as Error).message).toBe("connection lost");
    }
    expect(await passes(limits, 7)).toBe(6);
  });

  it("answers a failed claim with the error, and claims again on the next request", async () => {
    const clock = manualClock();
    const counter = new CountingCounter(new MemoryWindowCounter(100, clock.now));
    const { limits } = limiter(counter, 6, clock.now);
    counter.failNext = true;
    await expect(limits.take("submissions", "dev")).rejects.toThrow("connection lost");
    expect(await passes(limits, 7)).toBe(6);
  });

  it("keeps a bounded number of windows, forgetting the oldest under a flood of keys", async () => {
    const clock = manualClock();
    const counter = new MemoryWindowCounter(3, clock.now);
    for (const key of ["a", "b", "c", "d"]) await counter.claim(key, 1, 60_000);
    // "a" was forgotten to make room for "d": it starts again from zero.
    expect((await counter.claim("a", 1, 60_000)).total).toBe(1);
    expect((await counter.claim("d", 1, 60_000)).total).toBe(2);
  });
});

describe("rate limits under random load", () => {
  // Two replicas on one counter; bursts of concurrent requests of two keys on either, the clock moving
  // within a window, and windows ending between rounds. Per round and key: never more than the budget;
  // everything when well under it; at most a lease per replica short of it when asked for more.
  for (const max of [60, 200, 1250]) {
    it(`keeps every window within a budget of ${max} (lease ${leaseSize(max)})`, async () => {
      const lease = leaseSize(max);
      const burst = fc.record({
        replica: fc.integer({ min: 0, max: 1 }),
        key: fc.constantFrom("a", "b"),
        n: fc.integer({ min: 1, max: Math.max(2, Math.floor(max / 4)) }),
        later: fc.integer({ min: 0, max: 5_000 }),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(burst, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 4 }),
          async (rounds) => {
            const clock = manualClock();
            const counter = new MemoryWindowCounter(100, clock.now);
            const replicas = [
              limiter(counter, max, clock.now).limits,
              limiter(counter, max, clock.now).limits,
            ];
            for (const round of rounds) {
              const asked = new Map<string, number>();
              const granted = new Map<string, number>();
              for (const b of round) {
                // Less than a window in all within a round (12 bursts × 5 s < 60 s).
                clock.advance(b.later);
                asked.set(b.key, (asked.get(b.key) ?? 0) + b.n);
                granted.set(
                  b.key,
                  (granted.get(b.key) ?? 0) + (await passesTogether(replicas[b.replica]!, b.n, b.key)),
                );
              }
              for (const [key, n] of asked) {
                const got = granted.get(key) ?? 0;
                expect(got).toBeLessThanOrEqual(max);
                if (n <= max - 2 * lease) expect(got).toBe(n);
                if (n >= max) expect(got).toBeGreaterThanOrEqual(max - 2 * (lease - 1));
              }
              clock.advance(WINDOW_S * 1000); // every window and lease of the round ends
            }
          },
        ),
        { numRuns: 60 },
      );
    });
  }
});

/** How many of `n` takes made at once pass; the refusals must be 429s. */
async function passesTogether(limits: RateLimits, n: number, key: string): Promise<number> {
  const outcomes = await Promise.allSettled(Array.from({ length: n }, () => limits.take("submissions", key)));
  for (const o of outcomes) {
    if (o.status === "rejected") expect((o.reason as ProtocolError).code).toBe("rate_limited");
  }
  return outcomes.filter((o) => o.status === "fulfilled").length;
}

describe("pruneOldest", () => {
  it("drops every ended entry, then the oldest until the bound", () => {
    const map = new Map([
      ["a", 9],
      ["b", 1],
      ["c", 9],
      ["d", 1],
      ["e", 9],
    ]);
    pruneOldest(map, 10, (v) => v === 1);
    expect([...map.keys()]).toEqual(["a", "c", "e"]);
    pruneOldest(map, 1, (v) => v === 1);
    expect([...map.keys()]).toEqual(["e"]);
  });
});

describe("rate limits in Redis, across replicas", () => {
  const redis = useRedis();

  it("never lets more than the budget through two replicas, and strands at most a lease each", async () => {
    const clock = manualClock();
    const client = redisClient(redis());
    const counter = new RedisWindowCounter(client, redis().keyPrefix);
    const one = limiter(counter, 1250, clock.now).limits;
    const two = limiter(counter, 1250, clock.now).limits;
    let ok = 0;
    for (let i = 0; i < 1400; i++) ok += await passes(i % 2 === 0 ? one : two, 1, "alternating");
    expect(ok).toBeLessThanOrEqual(1250);
    expect(ok).toBeGreaterThanOrEqual(1250 - 2 * 24);
    // Concurrently on both, for a fresh key: the same bound.
    const outcomes = await Promise.allSettled(
      Array.from({ length: 1400 }, (_, i) => (i % 2 ? one : two).take("submissions", "together")),
    );
    const together = outcomes.filter((o) => o.status === "fulfilled").length;
    expect(together).toBeLessThanOrEqual(1250);
    expect(together).toBeGreaterThanOrEqual(1250 - 2 * 24);
  });

  it("counts a small budget exactly across replicas, in one key with the window as its expiry", async () => {
    const clock = manualClock();
    const client = redisClient(redis());
    const counter = new RedisWindowCounter(client, redis().keyPrefix);
    const one = limiter(counter, 6, clock.now).limits;
    const two = limiter(counter, 6, clock.now).limits;
    expect((await passes(one, 3, "exact")) + (await passes(two, 4, "exact"))).toBe(6);
    expect(await passes(one, 1, "exact")).toBe(0);
    const key = `${redis().keyPrefix}{rl:submissions:exact}`;
    // Every request was counted (refused ones too), in a key that ends with its window.
    expect(Number(await client.get(key))).toBe(8);
    const ttl = await client.pttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(WINDOW_S * 1000);
  });
});
