import type { Pin, PinStore } from "@mastodon-mls/bridge";
import { canonicalAcct, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { DeviceStore } from "../store/deviceStore.js";
import type { PinsRecord } from "../store/schemas.js";

/**
 * The bridge's `PinStore` over the device directory's `pins.json` (sealed like every other file, written
 * atomically): acct → the account key first seen for it (trust on first use), and whether the user
 * compared safety numbers for that key.
 */
export class DevicePinStore implements PinStore {
  /** Inside `batch`: how many writes are being held back. */
  private held = -1;

  constructor(
    private readonly store: DeviceStore,
    private record: PinsRecord,
  ) {}

  /**
   * Runs `work` with pin writes held back and written once at the end — before `batch` returns, so before
   * anything decided in `work` leaves the operation. Verifying a group pins each newly seen account: one
   * write per pass instead of one per account (512 rewrites of a growing file when joining a large group).
   */
  async batch<T>(work: () => Promise<T>): Promise<T> {
    if (this.held >= 0) return work();
    this.held = 0;
    try {
      return await work();
    } finally {
      const changed = this.held > 0;
      this.held = -1;
      if (changed) await this.store.writePins(this.record);
    }
  }

  static async load(store: DeviceStore): Promise<DevicePinStore> {
    return new DevicePinStore(store, await store.readPins());
  }

  /** Another process changed the directory: re-read. */
  async reload(): Promise<void> {
    this.record = await this.store.readPins();
  }

  /**
   * The accounts whose confirmed pin was contradicted (`keyChangedAt`), without decoding any key: what
   * every send checks (sendPolicy.ts), so it stays a walk over few entries, not a lookup per member.
   */
  contestedConfirmed(): string[] {
    return Object.entries(this.record.pins).flatMap(([acct, pin]) =>
      pin.oobVerified && pin.keyChangedAt !== undefined ? [acct] : [],
    );
  }

  get(acct: string): Promise<Pin | undefined> {
    const pin = this.record.pins[canonicalAcct(acct)];
    return Promise.resolve(
      pin === undefined
        ? undefined
        : {
            accountKey: fromBase64url(pin.accountKey),
            oobVerified: pin.oobVerified,
            pinnedAt: pin.pinnedAt,
            ...(pin.listVersion === undefined ? {} : { listVersion: pin.listVersion }),
            ...(pin.keyChangedAt === undefined ? {} : { keyChangedAt: pin.keyChangedAt }),
          },
    );
  }

  async set(acct: string, pin: Pin): Promise<void> {
    const next: PinsRecord = {
      pins: {
        ...this.record.pins,
        [canonicalAcct(acct)]: {
          accountKey: toBase64url(pin.accountKey),
          oobVerified: pin.oobVerified,
          pinnedAt: pin.pinnedAt,
          ...(pin.listVersion === undefined ? {} : { listVersion: pin.listVersion }),
          ...(pin.keyChangedAt === undefined ? {} : { keyChangedAt: pin.keyChangedAt }),
        },
      },
    };
    if (this.held >= 0) {
      this.held++;
      this.record = next;
      return;
    }
    // On disk first: a pin the process relied on must survive it.
    await this.store.writePins(next);
    this.record = next;
  }
}
