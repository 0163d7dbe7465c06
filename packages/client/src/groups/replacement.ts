import type { DeviceContext, GroupHandle } from "../context.js";

// docs/decisions.md D21. A re-created group (recreateGroup) names the group it replaces in the invitations
// its members post. An invitation's sender is not authenticated for accounts of other instances, so the
// claim is only a hint: it is taken once this device has joined the new group, and only if the member
// whose commit added this device (the Welcome's signer, mls/welcomeSigner.ts) is an account that was in
// the old group as this device knew it. A hint that comes before the Welcome waits in the old group's
// record. The first replacement linked is kept.

/** At most this many replacements offered for one group are remembered until their Welcome comes. */
const OFFERS_KEPT = 8;

/** An invitation saying `newId` replaces `oldId`: linked now if joined already, else remembered. */
export async function offerReplacement(ctx: DeviceContext, newId: string, oldId: string): Promise<void> {
  const old = ctx.groups.get(oldId);
  if (old === undefined || newId === oldId) return;
  if (ctx.groups.get(newId)?.record.status === "active") {
    await linkReplacement(ctx, newId, old);
    return;
  }
  const offers = old.record.offeredReplacements ?? [];
  if (offers.includes(newId)) return;
  old.record.offeredReplacements = [...offers, newId].slice(-OFFERS_KEPT);
  await ctx.saveGroup(old);
}

/** After joining `newId`: the group it replaces, if an offer for it checks out (then linked). */
export async function replacementJoined(ctx: DeviceContext, newId: string): Promise<string | undefined> {
  for (const old of ctx.groups.values()) {
    if (!(old.record.offeredReplacements ?? []).includes(newId)) continue;
    old.record.offeredReplacements = old.record.offeredReplacements!.filter((id) => id !== newId);
    if (old.record.offeredReplacements.length === 0) delete old.record.offeredReplacements;
    const linked = await linkReplacement(ctx, newId, old);
    if (!linked) await ctx.saveGroup(old);
    if (linked) return old.record.groupId;
  }
  return undefined;
}

async function linkReplacement(ctx: DeviceContext, newId: string, old: GroupHandle): Promise<boolean> {
  const fresh = ctx.groups.get(newId);
  const adder = fresh?.record.addedBy;
  if (fresh === undefined || adder === undefined || fresh.record.replaces !== undefined) return false;
  const members = new Set(Object.values(old.record.leaves).map((l) => l.acct));
  if (!members.has(adder)) return false;
  fresh.record.replaces = old.record.groupId;
  await ctx.saveGroup(fresh);
  if (old.record.replacedBy === undefined) old.record.replacedBy = newId;
  await ctx.saveGroup(old);
  return true;
}
