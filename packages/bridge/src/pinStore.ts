import { canonicalAcct } from "@mastodon-mls/protocol";
import { bytesEqual } from "./crypto.js";

// Trust on first use (DESIGN §3): the first account key seen for an acct is pinned; later keys are compared
// with it. The client persists pins (they are the only defence against the home admin once set).

export interface Pin {
  accountKey: Uint8Array;
  /** The user compared safety numbers with this key. */
  oobVerified: boolean;
  /** Seconds since the Unix epoch. */
  pinnedAt: number;
  /**
   * The newest device-list version seen verified under this key (MV-19): an older one served later is a
   * rollback. Absent: none recorded yet.
   */
  listVersion?: number;
  /**
   * When another account key was served while this pin's safety number was confirmed (MV-13): sending to
   * the account stays blocked from then on, whatever later lookups say, until the user decides (confirms
   * this key again, or accepts a new one). Seconds since the Unix epoch.
   */
  keyChangedAt?: number;
}

export interface PinStore {
  get(acct: string): Promise<Pin | undefined>;
  set(acct: string, pin: Pin): Promise<void>;
}

/** In memory, for services and tests; the client keeps its own persistent implementation. */
export class MemoryPinStore implements PinStore {
  private readonly pins = new Map<string, Pin>();

  get(acct: string): Promise<Pin | undefined> {
    const pin = this.pins.get(canonicalAcct(acct));
    return Promise.resolve(pin === undefined ? undefined : { ...pin, accountKey: pin.accountKey.slice() });
  }

  set(acct: string, pin: Pin): Promise<void> {
    this.pins.set(canonicalAcct(acct), { ...pin, accountKey: pin.accountKey.slice() });
    return Promise.resolve();
  }
}

/**
 * Records that the user compared safety numbers for `accountKey` (and it matched). Only the pinned key can
 * be confirmed: confirming a key that is not pinned would quietly accept a key change. Returns whether it did.
 */
export async function confirmPin(
  pins: PinStore,
  acct: string,
  accountKey: Uint8Array,
  now = Math.floor(Date.now() / 1000),
): Promise<boolean> {
  const pin = await pins.get(acct);
  if (pin !== undefined && !bytesEqual(pin.accountKey, accountKey)) return false;
  // Confirming again is the user's decision after a key change: the block it set ends (keyChangedAt).
  await pins.set(acct, {
    accountKey,
    oobVerified: true,
    pinnedAt: pin?.pinnedAt ?? now,
    ...(pin?.listVersion === undefined ? {} : { listVersion: pin.listVersion }),
  });
  return true;
}

/**
 * After `key-changed`, the user may accept the new key (having checked with the person): the new key is
 * pinned, not confirmed — the safety number must be compared again for `verified-oob`.
 */
export async function acceptNewKey(
  pins: PinStore,
  acct: string,
  accountKey: Uint8Array,
  now = Math.floor(Date.now() / 1000),
): Promise<void> {
  await pins.set(acct, { accountKey, oobVerified: false, pinnedAt: now });
}
