import { ProtocolError } from "@mastodon-mls/protocol";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ServiceUnavailableError } from "../errors.js";

// A group this device left is left at its hub too (docs/decisions.md D17): there it stops counting
// against the device's groups and delivers it nothing more, without waiting for a member to commit the
// Remove. Not before its own messages there are settled, though: after the departure the hub hands this
// device nothing of the group, echoes included, and an own message whose answer was lost would then be
// reported not sent although the others have it (groups/outbox.ts). Until done, `departPending` stays in
// the group record and every read of the hub tries again.

/**
 * Leaves the group at its hub if it is left here, the departure is still to do, and no own message there
 * waits for its echo.
 */
export async function departIfSettled(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  if (g.record.status !== "left" || g.record.departPending !== true) return;
  // An entry with the hub's number is known accepted and settles without its echo.
  if (g.record.outbox?.some((e) => e.seq === undefined)) return;
  try {
    await ctx.delivery(g.record.hub).depart(g.record.groupId);
  } catch (e) {
    // A hub that does not know the group has nothing to stop.
    if (!(e instanceof ProtocolError && e.code === "unknown_group")) throw e;
  }
  g.record.departPending = undefined;
  await ctx.saveGroup(g);
}

/** After a full read of `hub`: the departures its settled groups were waiting for. */
export async function departSettledGroups(ctx: DeviceContext, hub: string): Promise<void> {
  for (const g of [...ctx.groups.values()]) if (g.record.hub === hub) await departIfSettled(ctx, g);
}

/**
 * Right after `leave`: an unreachable or refusing hub does not undo the leave (the keys are gone
 * already); the departure waits for the next read of the hub.
 */
export async function departAfterLeaving(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  try {
    await departIfSettled(ctx, g);
  } catch (e) {
    if (!(e instanceof ServiceUnavailableError || e instanceof ProtocolError)) throw e;
    ctx.emit({ type: "error", groupId: g.record.groupId, operation: "leave at the hub", message: e.message });
  }
}
