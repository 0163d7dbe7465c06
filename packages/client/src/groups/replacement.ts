import { REPLACES_EXTENSION_TYPE, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { Extension } from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import type { GroupFork, LeafCheck } from "../store/schemas.js";
import type { WelcomeInfo } from "../mls/welcomeSigner.js";

// docs/decisions.md D21. A re-created group's Welcomes name the group it replaces in a GroupInfo extension,
// signed with the GroupInfo by the member whose commit adds the device. A joining device believes it only if
// that member's device (its signature key, not merely its account's name: a certificate in anyone's name
// passes the offline check) was a member of the old group as this device knew it, not marked `invalid`, and
// neither it nor its account sent a commit that forked the old group. A fork learned later undoes the links
// its sender signed. The first link is kept; one made on this device wins.

/** The GroupInfo extension naming `groupId` as the group replaced (for `createCommit`'s groupInfoExtensions). */
export function replacesExtension(groupId: string): Extension {
  return { extensionType: REPLACES_EXTENSION_TYPE, extensionData: fromBase64url(groupId, 64) };
}

/** A claim that checked out: the group replaced, and the device (and account) that signed it. */
export interface ReplacementClaim {
  replaces: string;
  signer: { deviceId: string; acct: string };
}

/** Who sent the commit that forked a group: its device id, and its account when known. */
type ForkSender = Pick<GroupFork, "sender" | "senderAcct">;

/** Whether this fork's sender is the device, or the account, that signed a link. */
function sentBy(f: ForkSender, signer: { deviceId: string; acct: string }): boolean {
  return f.sender === signer.deviceId || (f.senderAcct !== null && f.senderAcct === signer.acct);
}

/**
 * The group a Welcome says the group being joined (`newId`) replaces, if the claim checks out. `checks`
 * are the new group's leaf checks, by leaf index. Reads only: the caller records it (`recordReplacement`).
 */
export function replacementClaim(
  ctx: DeviceContext,
  newId: string,
  info: WelcomeInfo | undefined,
  checks: Record<string, LeafCheck>,
): ReplacementClaim | undefined {
  const claim = info?.extensions.find((e) => e.extensionType === REPLACES_EXTENSION_TYPE);
  if (info === undefined || claim === undefined) return undefined;
  const data = claim.extensionData;
  if (data.length < 1 || data.length > 64) return undefined;
  const oldId = toBase64url(data);
  const old = ctx.groups.get(oldId);
  const signer = checks[String(info.signer)];
  if (old === undefined || oldId === newId || signer === undefined || signer.status === "invalid")
    return undefined;
  const asMember = Object.values(old.record.leaves).find(
    (l) => l.deviceId === signer.deviceId && l.status !== "invalid",
  );
  if (asMember === undefined) return undefined;
  const who = { deviceId: signer.deviceId, acct: asMember.acct };
  const forks = old.record.forks ?? [];
  // By the account of its leaf in either group (they are the same unless a certificate says otherwise).
  if (forks.some((f) => sentBy(f, who) || sentBy(f, { ...who, acct: signer.acct }))) return undefined;
  return { replaces: oldId, signer: who };
}

/** After the new group's record (holding the claim) is on disk: the old group points at it, unless it already points elsewhere. */
export async function recordReplacement(
  ctx: DeviceContext,
  newId: string,
  claim: ReplacementClaim,
): Promise<void> {
  const old = ctx.groups.get(claim.replaces);
  if (old === undefined || old.record.replacedBy !== undefined) return;
  old.record.replacedBy = newId;
  await ctx.saveGroup(old);
}

/**
 * A fork of `old` is known: links its sender (the device, or any device of its account) signed are
 * undone — the new group no longer claims to continue `old`, so this device does not pass the claim on,
 * and `old` no longer points at it (a later valid link may then take the place).
 */
export async function unlinkForkSender(
  ctx: DeviceContext,
  old: GroupHandle,
  fork: ForkSender,
): Promise<void> {
  for (const g of ctx.groups.values()) {
    const signer = g.record.replacesSigner;
    if (g.record.replaces !== old.record.groupId || signer === undefined || !sentBy(fork, signer)) continue;
    delete g.record.replaces;
    delete g.record.replacesSigner;
    await ctx.saveGroup(g);
    if (old.record.replacedBy === g.record.groupId) {
      delete old.record.replacedBy;
      await ctx.saveGroup(old);
    }
  }
}
