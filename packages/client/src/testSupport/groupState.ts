import type { ClientState } from "ts-mls";
import { loadGroupState } from "../context.js";
import type { UnlockOptions } from "../store/cipher.js";
import { DeviceStore } from "../store/deviceStore.js";

// Test and benchmark support: the MLS state of a group exactly as a device directory holds it, read back
// through the client's own store (decryption included). Read-only: nothing is written, no lock is taken,
// so call it only while the device's client is idle. bench/client compares ts-mls on this very state
// with the client doing the same operation.

export type GroupStateReader = (groupId: string) => Promise<ClientState>;

/** Unlocks the directory once (cheap with `insecureTestKdf`); each call reads the group's current state. */
export async function openGroupStateReader(dir: string, opts: UnlockOptions): Promise<GroupStateReader> {
  const store = await DeviceStore.open(dir, opts);
  return async (groupId) => {
    const record = await store.readGroup(groupId);
    const state = record === undefined ? undefined : (await loadGroupState(store, record)).state;
    if (state === undefined) throw new Error(`${dir} holds no state of ${groupId}`);
    return state;
  };
}
