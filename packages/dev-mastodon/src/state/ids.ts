import { randomBytes } from "node:crypto";

/**
 * Mastodon's Snowflake-like ids: milliseconds since the epoch shifted left 16 bits plus a sequence,
 * as decimal strings. Clients must treat ids as opaque strings; 18-digit values catch those that parse
 * them as JavaScript numbers.
 */
export class IdGenerator {
  private lastMs = 0n;
  private sequence = 0n;

  next(): string {
    const now = BigInt(Date.now());
    if (now > this.lastMs) {
      this.lastMs = now;
      this.sequence = BigInt(randomBytes(1)[0] ?? 0);
    } else {
      this.sequence += 1n;
      // More than 65,536 ids in a millisecond: borrow from the next one, keeping ids increasing.
      if (this.sequence > 0xffffn) {
        this.lastMs += 1n;
        this.sequence = 0n;
      }
    }
    return ((this.lastMs << 16n) | this.sequence).toString();
  }
}

/** Doorkeeper's secrets and codes: 32 random bytes, URL-safe base64 (43 characters). */
export function secretToken(): string {
  return randomBytes(32).toString("base64url");
}
