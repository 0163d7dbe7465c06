/**
 * A map of at most `max` entries that drops the least recently used one to make room: caches that a flood
 * of fresh keys cannot grow, and that keep what is in use. (A Map iterates in insertion order; an entry
 * used is moved to the end.)
 */
export class LruCache<K, V> {
  private readonly entries = new Map<K, V>();

  constructor(readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("an LruCache holds at least one entry");
  }

  get size(): number {
    return this.entries.size;
  }

  /** Whether the key is cached (not a use: its place in the order stays). */
  has(key: K): boolean {
    return this.entries.has(key);
  }

  get(key: K): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, value);
  }

  /** The cached value, or `make()`'s, cached. */
  getOrSet(key: K, make: () => V): V {
    let value = this.get(key);
    if (value === undefined) {
      value = make();
      this.set(key, value);
    }
    return value;
  }
}
