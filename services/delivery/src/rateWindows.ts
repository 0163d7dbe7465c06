import type { Redis } from "@mastodon-mls/service-kit";
import { LuaScript } from "./store/lua.js";

/**
 * Fixed-window counts shared by every replica: `claim(key, n)` adds n to the key's count in the current
 * window and answers the count after it and how long the window has left. A window starts with the
 * first claim of a key and lasts `windowMs`; counts only grow within it.
 */
export interface WindowCounter {
  claim(key: string, n: number, windowMs: number): Promise<{ total: number; ttlMs: number }>;
}

/**
 * KEYS: the count. ARGV: n, windowMs. → {count after adding n, milliseconds the window has left}. A
 * count without an expiry (none should exist) gets one, so no key outlives its window.
 */
const CLAIM = new LuaScript(`
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {total, ttl}
`);

/** Counts in Redis under `<prefix>{rl:<key>}` (one key, one slot), with the window as the key's expiry. */
export class RedisWindowCounter implements WindowCounter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async claim(key: string, n: number, windowMs: number): Promise<{ total: number; ttlMs: number }> {
    const [total, ttlMs] = (await CLAIM.run(this.redis, [`${this.prefix}{rl:${key}}`], [n, windowMs])) as [
      number,
      number,
    ];
    return { total, ttlMs };
  }
}

/** Counts in this process (STORE=memory: one replica). At most `maxKeys` windows are kept. */
export class MemoryWindowCounter implements WindowCounter {
  private readonly counts = new Map<string, { total: number; resetAt: number }>();

  constructor(
    private readonly maxKeys = 100_000,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  async claim(key: string, n: number, windowMs: number): Promise<{ total: number; ttlMs: number }> {
    const now = this.clock();
    let entry = this.counts.get(key);
    if (entry && now >= entry.resetAt) {
      this.counts.delete(key);
      entry = undefined;
    }
    if (!entry) {
      // At the bound: ended windows go, then (under a flood of keys) the oldest live ones, until a tenth
      // is free, so that pruning runs once per many new keys.
      if (this.counts.size >= this.maxKeys) {
        pruneOldest(this.counts, Math.floor(this.maxKeys * 0.9), (e) => now >= e.resetAt);
      }
      entry = { total: 0, resetAt: now + windowMs };
      this.counts.set(key, entry);
    }
    entry.total += n;
    return { total: entry.total, ttlMs: Math.max(0, entry.resetAt - now) };
  }
}

/**
 * Deletes every ended entry of `map` (`ended`), then its oldest (first inserted) until it holds at most
 * `keep`. A whole pass: call it at a bound, with room to spare after, not on every insertion.
 */
export function pruneOldest<V>(map: Map<string, V>, keep: number, ended: (v: V) => boolean): void {
  for (const [k, v] of map) if (ended(v)) map.delete(k);
  for (const k of map.keys()) {
    if (map.size <= keep) return;
    map.delete(k);
  }
}
