import {
  bytesEqual,
  decodeDeviceList,
  publishProof,
  verifyDeviceList,
  type DeviceList,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { ProtocolError, fromBase64url, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { ClientError } from "../errors.js";
import type { DeviceStore } from "../store/deviceStore.js";
import type { AccountList, DeviceRecord } from "../store/schemas.js";
import { DirectoryClient } from "../transport/directoryClient.js";

// The account's own device list (DESIGN §3, docs/identity.md §10 "Client"): kept in device.json on the
// device holding the account key, published directory first, then as the profile proof — after every
// change. Each step is recorded once done, so a set-up or revocation cut short is finished by running
// `publishAccountList` again (MlsDmClient.open does).

/** The Mastodon API origin of the device's account. */
export function mastodonUrlOf(device: DeviceRecord): string {
  return device.mastodonUrl ?? `https://${parseAcct(device.acct).domain}`;
}

export function accountKeyOf(device: DeviceRecord): SigningKeyPair {
  if (device.accountKey === null) {
    throw new ClientError("no_account_key", "this device does not hold the account key");
  }
  return {
    publicKey: fromBase64url(device.accountKey.publicKey),
    signKey: fromBase64url(device.accountKey.signKey),
  };
}

/**
 * The newest list this device signed with the account key it holds (MV-19's `knownList`): it exists
 * whatever the home directory and instance serve, so an older one served for this account is a rollback.
 * Undefined for a device without the account key.
 */
export function ownSignedList(
  device: DeviceRecord,
): { acct: string; accountKey: Uint8Array; version: number } | undefined {
  if (device.accountKey === null || device.accountList == null) return undefined;
  return {
    acct: device.acct,
    accountKey: fromBase64url(device.accountKey.publicKey),
    version: device.accountList.version,
  };
}

/** Whether the device's list still has to reach the directory or the profile. */
export function accountListPending(device: DeviceRecord): boolean {
  const l = device.accountList;
  return l != null && (l.directoryVersion < l.version || l.profileVersion < l.version);
}

export async function currentList(device: DeviceRecord): Promise<DeviceList> {
  const l = device.accountList;
  if (l == null) throw new ClientError("no_account_key", "this device keeps no device list of the account");
  const key = accountKeyOf(device);
  return verifyDeviceList(decodeDeviceList(fromBase64url(l.list)), key.publicKey);
}

/** A new version of the list (bytes), to be published: saved first, then sent. */
export async function recordNewList(
  store: DeviceStore,
  device: DeviceRecord,
  list: Uint8Array,
  version: number,
): Promise<DeviceRecord> {
  const prev = device.accountList;
  const next: AccountList = {
    list: toBase64url(list),
    version,
    directoryVersion: prev?.directoryVersion ?? 0,
    profileVersion: prev?.profileVersion ?? 0,
  };
  const updated = { ...device, accountList: next };
  await store.writeDevice(updated);
  return updated;
}

/**
 * The directory refused version `ours` as stale: another device holding the account key (a restored one)
 * published a list meanwhile. When the directory's list verifies under the account key and is at least as
 * new, this device takes it as its own (saved: nothing is left to publish, so the device opens and works
 * again) and its own change is dropped — it was built on an older list, and replaying it blindly could
 * undo the other device's (a revocation above all). Throws `device_list_conflict` either way, saying which.
 */
async function adoptNewerList(
  store: DeviceStore,
  device: DeviceRecord,
  directory: DirectoryClient,
  ours: number,
): Promise<never> {
  const served = (await directory.accountDevices(device.acct).catch(() => undefined))?.device_list;
  let theirs: DeviceList | undefined;
  if (served != null) {
    try {
      const list = await verifyDeviceList(
        decodeDeviceList(fromBase64url(served)),
        accountKeyOf(device).publicKey,
      );
      if (list.acct === device.acct && list.version >= ours) theirs = list;
    } catch {
      // Not signed by this account's key: not ours to adopt (the member verification reports it).
    }
  }
  if (theirs === undefined) {
    throw new ClientError(
      "device_list_conflict",
      `the directory at ${device.home.directory} refused version ${ours} of the device list of ${device.acct} ` +
        "as out of date, and serves no newer list signed by this account's key; nothing was published",
    );
  }
  const prev = device.accountList!;
  await store.writeDevice({
    ...device,
    accountList: {
      list: served!,
      version: theirs.version,
      directoryVersion: theirs.version,
      profileVersion: Math.min(prev.profileVersion, theirs.version),
    },
  });
  const dropped =
    `another device holding the account key of ${device.acct} published version ${theirs.version} of its ` +
    `device list meanwhile, so this device's change (version ${ours}: a device approved or revoked here ` +
    "while the directory could not be reached) was not published.";
  const self = fromBase64url(device.deviceKey.publicKey);
  if (!theirs.devices.some((d) => bytesEqual(d.sigKey, self))) {
    throw new ClientError(
      "device_list_conflict",
      `${dropped} That list does not name this device: this device was revoked by the other one, and ` +
        "cannot be added to groups any more. If that was a mistake, link it again from a device that holds " +
        "the account key (mls-dm link-device), or restore it from the backup.",
    );
  }
  throw new ClientError(
    "device_list_conflict",
    `${dropped} This device now uses that list: make the change again (approve the link again, or revoke ` +
      "the device again)",
  );
}

/**
 * PUT the list to the home directory, then publish the profile proof naming its version (the directory
 * first: a profile naming a version the directory does not have yet would show `stale`, MV-15).
 */
export async function publishAccountList(store: DeviceStore, device: DeviceRecord): Promise<DeviceRecord> {
  let l = device.accountList;
  if (l == null) return device;
  let current = device;
  if (l.directoryVersion < l.version) {
    const directory = new DirectoryClient(device.home.directory);
    try {
      await directory.putDeviceList(
        device.acct,
        fromBase64url(l.list),
        device.mastodonToken,
        l.rotation === undefined ? undefined : fromBase64url(l.rotation),
      );
    } catch (e) {
      if (e instanceof ProtocolError && e.code === "stale_device_list") {
        await adoptNewerList(store, device, directory, l.version);
      }
      throw e;
    }
    const { rotation: _sent, ...rest } = l;
    l = { ...rest, directoryVersion: l.version };
    current = { ...current, accountList: l };
    await store.writeDevice(current);
  }
  if (l.profileVersion < l.version) {
    const mastodonUrl = mastodonUrlOf(device);
    try {
      await publishProof({
        mastodonUrl,
        token: device.mastodonToken,
        acct: device.acct,
        accountKey: accountKeyOf(device),
        deviceListVersion: l.version,
      });
    } catch (e) {
      if (e instanceof ProtocolError && (e.code === "insufficient_scope" || e.code === "invalid_token")) {
        throw new ProtocolError(
          e.code,
          `${mastodonUrl} refused to update the profile of ${device.acct}: publishing the identity proof ` +
            "needs a token with the write:accounts scope (mls-dm login asks for it). Log in again, then " +
            "reopen this device to finish.",
          e.details,
        );
      }
      throw e;
    }
    l = { ...l, profileVersion: l.version };
    current = { ...current, accountList: l };
    await store.writeDevice(current);
  }
  return current;
}
