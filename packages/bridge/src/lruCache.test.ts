import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LruCache } from "./lruCache.js";

describe("LruCache", () => {
  it("drops the least recently used entry, not the oldest one written", () => {
    const cache = new LruCache<string, number>(2);
    cache.set("a", 1);
    cache.set("b", 2);
    expect(cache.get("a")).toBe(1); // a is now the most recently used
    cache.set("c", 3);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBe(1);
    expect(cache.get("c")).toBe(3);
    expect(cache.size).toBe(2);
  });

  it("makes a value once while it stays cached", () => {
    const cache = new LruCache<string, object>(1);
    let made = 0;
    const make = () => ({ n: ++made });
    const first = cache.getOrSet("k", make);
    expect(cache.getOrSet("k", make)).toBe(first);
    cache.getOrSet("other", make);
    expect(cache.getOrSet("k", make)).not.toBe(first);
    expect(made).toBe(3);
  });

  it("never holds more than its bound, and always the last `max` keys used (a model check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 60 }),
        (max, uses) => {
          const cache = new LruCache<number, number>(max);
          const recent: number[] = [];
          for (const k of uses) {
            cache.getOrSet(k, () => k * 10);
            recent.splice(recent.indexOf(k) >>> 0, recent.includes(k) ? 1 : 0);
            recent.push(k);
          }
          expect(cache.size).toBe(Math.min(max, new Set(uses).size));
          for (const k of recent.slice(-max)) expect(cache.get(k)).toBe(k * 10);
        },
      ),
    );
  });

  it("refuses a bound below one", () => {
    expect(() => new LruCache(0)).toThrow(RangeError);
  });
});
