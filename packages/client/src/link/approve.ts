import { accountKeyFingerprint, addDevice, bytesEqual } from "@mastodon-mls/bridge";
import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { accountKeyOf, publishAccountList, recordNewList } from "../identity/accountList.js";
import { newestOwnList } from "../identity/members.js";
import { certifyDevice } from "../setup.js";
import type { LinkRequest } from "./code.js";

// The approving half of linking (docs/protocol.md "Linking a device"), on a device holding the account
// key: a new version of the account's device list naming the new key — to the home directory, then as the
// profile proof — and only then the new device's certificate, registered at the home directory, where the
// new device is waiting for it (LNK-6). Each step is idempotent, so approving the same code again finishes
// an approval cut short.

export interface Approval {
  deviceId: string;
  name: string;
  /** The device-list version that names the new device. */
  version: number;
  /** false when the list named the device already (an approval repeated). */
  listed: boolean;
  /**
   * LNK-12: the fingerprint of the account key that certified the device. The new device shows the one it
   * pinned (`MlsDmClient.accountKeyFingerprint`); another there means its home instance and directory
   * gave it a key of theirs, which nothing else would tell it.
   */
  accountKey: string;
}

export async function approveLink(ctx: DeviceContext, request: LinkRequest): Promise<Approval> {
  const key = accountKeyOf(ctx.device);
  if (ctx.device.accountList == null) {
    throw new ClientError("no_account_key", "this device keeps no device list (set up before device lists)");
  }
  if (request.deviceId === ctx.deviceId) throw new ClientError("bad_input", "that is this device's own code");
  // Finish anything left to publish first, so the version built on is the one the directory holds.
  ctx.device = await publishAccountList(ctx.store, ctx.device);
  const current = await newestOwnList(ctx);
  // Real time, as for every certificate (the context's clock drives the weekly self-update only).
  const now = Math.floor(Date.now() / 1000);
  let version = current.version;
  const alreadyListed = current.devices.some((d) => bytesEqual(d.sigKey, request.sigKey));
  if (!alreadyListed) {
    const next = await addDevice(current, { sigKey: request.sigKey, name: request.name }, key, now);
    version = current.version + 1;
    ctx.device = await recordNewList(ctx.store, ctx.device, next, version);
    ctx.device = await publishAccountList(ctx.store, ctx.device);
  }
  const served = await ctx.home.directory.accountDevices(ctx.device.acct);
  if (!served.devices.some((d) => d.device_id === request.deviceId)) {
    const certificate = await certifyDevice(ctx.device.identity, key, request.sigKey, now);
    await ctx.home.directory.registerDevice(request.deviceId, certificate, ctx.device.mastodonToken);
  }
  ctx.verifier.forget(ctx.device.acct);
  return {
    deviceId: request.deviceId,
    name: request.name,
    version,
    listed: !alreadyListed,
    accountKey: accountKeyFingerprint(key.publicKey),
  };
}
