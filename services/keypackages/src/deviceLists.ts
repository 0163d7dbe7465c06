import {
  bytesEqual,
  checkCertificateInList,
  decodeDeviceCertificate,
  decodeDeviceList,
  verifyDeviceCertificate,
  verifyDeviceList,
  type DeviceCertificate,
  type DeviceList,
} from "@mastodon-mls/bridge";
import { ProtocolError, toBase64url } from "@mastodon-mls/protocol";
import type { DeviceRecord, DirectoryStore } from "./store/directoryStore.js";

// The account's signed device list as the directory's routes use it (docs/identity.md §5, DIR-1…DIR-5).
// Registrations and uploads are checked against the list (DIR-5) and then written with a guard naming
// the version they were checked against, so a list replaced meanwhile makes them check again.

/** The state of an account's list that guarded writes are checked against. */
export interface CurrentList {
  /** 0 before the account's first list. */
  version: number;
  /** The stored bytes, exactly as uploaded. */
  bytes: Uint8Array | undefined;
  list: DeviceList | undefined;
  /** Continuity statements, oldest first. */
  rotations: Uint8Array[];
}

export async function loadCurrentList(
  store: DirectoryStore,
  acct: string,
  now: number,
): Promise<CurrentList> {
  const stored = await store.getDeviceList(acct);
  if (!stored) return { version: 0, bytes: undefined, list: undefined, rotations: [] };
  // Verified when it was stored; verified again to get the bridge's trusted type (one signature check).
  const decoded = decodeDeviceList(stored.list);
  const list = await verifyDeviceList(decoded, decoded.accountKey, now);
  return { version: stored.version, bytes: stored.list, list, rotations: stored.rotations };
}

/**
 * DIR-5 for a device certificate (a registration's, or the one inside a KeyPackage): with a list, the
 * device must be in it (`device_not_listed`) and the certificate by its key or a key the stored
 * continuity statements link to it (`invalid_certificate`). Without a list: refused only when
 * DEVICE_LIST_REQUIRED is set (D7).
 */
export async function checkListed(
  current: CurrentList,
  cert: DeviceCertificate,
  listRequired: boolean,
  now: number,
): Promise<void> {
  const list = requireList(current, listRequired);
  if (!list) return;
  try {
    await checkCertificateInList(cert, list, current.rotations, now);
  } catch (err) {
    // The bridge says unknown_device (DIR-5); here that code already means "not registered".
    if (err instanceof ProtocolError && err.code === "unknown_device") {
      throw new ProtocolError("device_not_listed", err.message);
    }
    throw err;
  }
}

/**
 * The list a write is checked against: undefined when the account has none and lists are not required
 * (D7: today's behaviour), `device_not_listed` when they are.
 */
export function requireList(current: CurrentList, listRequired: boolean): DeviceList | undefined {
  if (current.list || !listRequired) return current.list;
  throw new ProtocolError(
    "device_not_listed",
    "The account has published no device list; PUT /v1/accounts/:acct/device-list with this device first.",
  );
}

/** A registered device (an upload's) is in the list by id and key (`device_not_listed`). */
export function checkRegisteredListed(
  current: CurrentList,
  device: DeviceRecord,
  listRequired: boolean,
): void {
  const list = requireList(current, listRequired);
  if (!list) return;
  const listed = list.devices.find((d) => toBase64url(d.deviceId) === device.deviceId);
  if (!listed || !bytesEqual(listed.sigKey, device.sigKey)) {
    throw new ProtocolError("device_not_listed");
  }
}

/** Whether a registration survives a new list (DIR-5 under it); certificate expiry is not judged here. */
export async function survives(
  device: DeviceRecord,
  list: DeviceList,
  rotations: readonly Uint8Array[],
  now: number,
): Promise<boolean> {
  try {
    const cert = await verifyDeviceCertificate(decodeDeviceCertificate(device.certificate), now, {
      checkTimes: false,
    });
    await checkCertificateInList(cert, list, rotations, now);
    return true;
  } catch (err) {
    if (err instanceof ProtocolError) return false;
    throw err;
  }
}

/** Returned by a guarded write whose list changed underneath it. */
export const LIST_CHANGED = Symbol("listChanged");

/** How often a write is checked again when the account's list keeps changing under it. */
const ATTEMPTS = 5;

/**
 * Runs `attempt` against the account's current list until its guarded write lands (or it throws). A
 * list that changes under every attempt (someone replacing it in a tight loop) ends in 409.
 */
export async function withCurrentList<T>(
  store: DirectoryStore,
  acct: string,
  now: () => number,
  attempt: (current: CurrentList, now: number) => Promise<T | typeof LIST_CHANGED>,
): Promise<T> {
  for (let i = 0; i < ATTEMPTS; i++) {
    const at = now();
    const result = await attempt(await loadCurrentList(store, acct, at), at);
    if (result !== LIST_CHANGED) return result;
  }
  throw new ProtocolError(
    "stale_device_list",
    "The account's device list changed during this request, again and again; retry.",
  );
}
