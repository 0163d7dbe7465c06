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

/**
 * In-memory nonce store for the embedded default and for clients; expired entries are swept lazily.
 * Bounded twice: in all (`maxEntries`) and per device (`maxPerDevice`, keyed on what precedes the first
 * `:` of a key, the device id in requestAuth's keys). Full, it refuses rather than forget a live nonce
 * (forgetting would let that request be replayed); the per-device bound keeps one busy or hostile device
 * from filling it for everyone: it needs more requests within a nonce's lifetime than the services' rate
 * limits let an honest device make (DESIGN §7; docs/operations.md "Nonces"). Many devices together can
 * still fill it; a deployment that must withstand that runs on Redis, where nonces are bounded by Redis's
 * memory only.
 */
export class MemoryNonceStore implements NonceStore {
  private readonly seen = new Map<string, number>();
  private readonly perDevice = new Map<string, number>();
  private lastSweep = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxEntries = 1_000_000,
    private readonly maxPerDevice = 50_000,
  ) {}

  claim(key: string, ttlSeconds: number): Promise<boolean> {
    const t = this.now();
    const device = deviceOf(key);
    if (
      t - this.lastSweep > 10_000 ||
      (t - this.lastSweep > 1_000 &&
        (this.seen.size >= this.maxEntries || (this.perDevice.get(device) ?? 0) >= this.maxPerDevice))
    ) {
      this.sweep(t);
    }
    const until = this.seen.get(key);
    if (until !== undefined && until > t) return Promise.resolve(false);
    const held = this.perDevice.get(device) ?? 0;
    if (this.seen.size >= this.maxEntries || held >= this.maxPerDevice) return Promise.resolve(false);
    if (until === undefined) this.perDevice.set(device, held + 1);
    this.seen.set(key, t + ttlSeconds * 1000);
    return Promise.resolve(true);
  }

  private sweep(t: number): void {
    this.lastSweep = t;
    for (const [k, until] of this.seen) {
      if (until > t) continue;
      this.seen.delete(k);
      const device = deviceOf(k);
      const left = (this.perDevice.get(device) ?? 1) - 1;
      if (left > 0) this.perDevice.set(device, left);
      else this.perDevice.delete(device);
    }
  }
}

function deviceOf(key: string): string {
  const colon = key.indexOf(":");
  return colon < 0 ? key : key.slice(0, colon);
}
