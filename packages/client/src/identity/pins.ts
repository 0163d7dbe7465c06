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
  constructor(
    private readonly store: DeviceStore,
    private record: PinsRecord,
  ) {}

  static async load(store: DeviceStore): Promise<DevicePinStore> {
    return new DevicePinStore(store, await store.readPins());
  }

  /** Another process changed the directory: re-read. */
  async reload(): Promise<void> {
    this.record = await this.store.readPins();
  }

  get(acct: string): Promise<Pin | undefined> {
    const pin = this.record.pins[canonicalAcct(acct)];
    return Promise.resolve(
      pin === undefined
        ? undefined
        : { accountKey: fromBase64url(pin.accountKey), oobVerified: pin.oobVerified, pinnedAt: pin.pinnedAt },
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
        },
      },
    };
    // On disk first: a pin the process relied on must survive it.
    await this.store.writePins(next);
    this.record = next;
  }
}
