import { randomBytes } from "node:crypto";
import { generateDeviceKeyPackage, profileClientConfig } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { createGroup } from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import { checkLeaves } from "../mls/leaves.js";

/**
 * A new group with this device alone at epoch 0, hosted on its home delivery service: a random 16-byte
 * id, registered with the hub first, then written to disk. (A crash in between leaves an empty group on
 * the hub, never a local group without one.)
 */
export async function createOwnGroup(ctx: DeviceContext, opts: { replaces?: string } = {}): Promise<string> {
  // A group id is typed on command lines: one starting with "-" would read as an option there (1 in 64).
  let groupIdBytes: Uint8Array;
  do groupIdBytes = new Uint8Array(randomBytes(16));
  while ((groupIdBytes[0]! & 0xfc) === 0xf8);
  const groupId = toBase64url(groupIdBytes);
  // A fresh KeyPackage of this device, never published: its keys go straight into the group state. It
  // carries the certificate extension and the profile's capabilities like every leaf of ours.
  const kp = await generateDeviceKeyPackage({
    identity: ctx.identity,
    signatureKeyPair: ctx.signatureKeyPair,
    certificate: fromBase64url(ctx.device.certificate),
  });
  const state = await createGroup(
    groupIdBytes,
    kp.publicPackage,
    kp.privatePackage,
    [],
    ctx.cs,
    profileClientConfig(),
  );
  await ctx.home.delivery.createGroup(groupId);
  const g: GroupHandle = {
    record: {
      groupId,
      hub: ctx.home.delivery.baseUrl,
      status: "active",
      state: null,
      lastSeq: -1,
      leaves: (await checkLeaves(state.ratchetTree, {})).checks,
      buffered: [],
      unsentInvitations: [],
      needsSelfUpdate: false,
      ownLeafUpdatedAt: ctx.nowSeconds(),
      leaving: [],
      ...(opts.replaces === undefined ? {} : { replaces: opts.replaces }),
    },
    state,
    pending: undefined,
  };
  ctx.groups.set(groupId, g);
  await ctx.saveGroup(g);
  return groupId;
}
