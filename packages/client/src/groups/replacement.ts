import { REPLACES_EXTENSION_TYPE, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { Extension } from "ts-mls";
import type { DeviceContext } from "../context.js";
import type { LeafCheck } from "../store/schemas.js";
import type { WelcomeInfo } from "../mls/welcomeSigner.js";

// docs/decisions.md D21. A re-created group's Welcomes name the group it replaces in a GroupInfo extension,
// signed with the GroupInfo by the member whose commit adds the device. A joining device believes it only if
// that member's device (its signature key, not merely its account's name: a certificate in anyone's name
// passes the offline check) was a member of the old group as this device knew it, not marked `invalid`,
// and not the sender of a commit that forked it. The first link is kept; one made on this device wins.

/** The GroupInfo extension naming `groupId` as the group replaced (for `createCommit`'s groupInfoExtensions). */
export function replacesExtension(groupId: string): Extension {
  return { extensionType: REPLACES_EXTENSION_TYPE, extensionData: fromBase64url(groupId, 64) };
}

/**
 * After joining `newId`: the group it replaces, if its Welcome named one and the claim checks out (then
 * linked both ways and saved). `checks` are the new group's leaf checks, by leaf index.
 */
export async function linkReplacement(
  ctx: DeviceContext,
  newId: string,
  info: WelcomeInfo | undefined,
  checks: Record<string, LeafCheck>,
): Promise<string | undefined> {
  const claim = info?.extensions.find((e) => e.extensionType === REPLACES_EXTENSION_TYPE);
  if (info === undefined || claim === undefined) return undefined;
  const data = claim.extensionData;
  if (data.length < 1 || data.length > 64) return undefined;
  const oldId = toBase64url(data);
  const old = ctx.groups.get(oldId);
  const fresh = ctx.groups.get(newId);
  const signer = checks[String(info.signer)];
  if (old === undefined || fresh === undefined || oldId === newId || signer === undefined) return undefined;
  if (signer.status === "invalid") return undefined;
  const wasMember = Object.values(old.record.leaves).some(
    (l) => l.deviceId === signer.deviceId && l.status !== "invalid",
  );
  const forkedIt = (old.record.forks ?? []).some((f) => f.sender === signer.deviceId);
  if (!wasMember || forkedIt) return undefined;
  fresh.record.replaces = oldId;
  await ctx.saveGroup(fresh);
  if (old.record.replacedBy === undefined) {
    old.record.replacedBy = newId;
    await ctx.saveGroup(old);
  }
  return oldId;
}
