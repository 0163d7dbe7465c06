import type { DeviceCertificate } from "./deviceCertificate.js";

/** Remembers request nonces for their lifetime so a replayed request is refused (DESIGN §7). */
export interface NonceStore {
  /**
   * True the first time a key is seen within `ttlSeconds`; false for a replay. `device` is the verified
   * certificate of the device spending the nonce (its signature already checked): a service may count
   * the request against that device's rate limits in the same atomic step, so that a replay, refused
   * here, never spends anyone's budget.
   */
  claim(key: string, ttlSeconds: number, device: DeviceCertificate): Promise<boolean>;
}

/** In-memory nonce store for the embedded default and for clients; expired entries are swept lazily. */
export class MemoryNonceStore implements NonceStore {
  private readonly seen = new Map<string, number>();
  private lastSweep = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxEntries = 1_000_000,
  ) {}

  claim(key: string, ttlSeconds: number): Promise<boolean> {
    const t = this.now();
    if (t - this.lastSweep > 10_000 || this.seen.size >= this.maxEntries) this.sweep(t);
    const until = this.seen.get(key);
    if (until !== undefined && until > t) return Promise.resolve(false);
    if (this.seen.size >= this.maxEntries) {
      // Full of live nonces: refusing is safer than forgetting one (that would allow a replay).
      return Promise.resolve(false);
    }
    this.seen.set(key, t + ttlSeconds * 1000);
    return Promise.resolve(true);
  }

  private sweep(t: number): void {
    this.lastSweep = t;
    for (const [k, until] of this.seen) if (until <= t) this.seen.delete(k);
  }
}
