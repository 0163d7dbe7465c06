import { generateSigningKeyPair, reissueDeviceList, signKeyRotation } from "@mastodon-mls/bridge";
import { toBase64url } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { accountKeyOf, publishAccountList } from "./accountList.js";
import { newestOwnList } from "./members.js";

// Account-key rotation (docs/identity.md KR rules): a new account key, a continuity statement signed by
// the old one, and the account's device list re-signed under the new key as its next version. Peers who
// pinned the old key follow the statement (MV-13: `rotated`, not `key-changed`); certificates made under
// the old key stay valid through it (MV-14), so no device has to be linked again.

export interface Rotation {
  /** The device-list version now under the new key. */
  version: number;
  /** base64url of the new account key. */
  accountKey: string;
}

/**
 * Everything the rotation needs is signed and saved in device.json before anything is sent (the new key,
 * the list, the statement); the old private key is then gone. A rotation cut short is finished by
 * `publishAccountList` on the next open: the directory gets the list with its statement, then the profile
 * proof names the new key.
 */
export async function rotateAccountKey(ctx: DeviceContext): Promise<Rotation> {
  const oldKey = accountKeyOf(ctx.device);
  // Whatever is still unpublished goes first, so the statement links the key the directory holds.
  ctx.device = await publishAccountList(ctx.store, ctx.device);
  const published = ctx.device.accountList;
  if (published == null) {
    throw new ClientError("no_account_key", "this device keeps no device list (set up before device lists)");
  }
  const current = await newestOwnList(ctx);
  const newKey = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const statement = await signKeyRotation({
    identity: ctx.device.identity,
    oldKey,
    newKey: newKey.publicKey,
    now,
  });
  const list = await reissueDeviceList(current, newKey, now);
  const version = current.version + 1;
  ctx.device = {
    ...ctx.device,
    accountKey: { publicKey: toBase64url(newKey.publicKey), signKey: toBase64url(newKey.signKey) },
    accountList: {
      list: toBase64url(list),
      version,
      directoryVersion: published.directoryVersion,
      profileVersion: published.profileVersion,
      rotation: toBase64url(statement),
    },
  };
  await ctx.saveDevice();
  await ctx.pins.set(ctx.device.acct, { accountKey: newKey.publicKey, oobVerified: false, pinnedAt: now });
  ctx.device = await publishAccountList(ctx.store, ctx.device);
  ctx.verifier.forget(ctx.device.acct);
  return { version, accountKey: toBase64url(newKey.publicKey) };
}
