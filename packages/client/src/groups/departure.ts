import { ProtocolError } from "@mastodon-mls/protocol";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ServiceUnavailableError } from "../errors.js";

// A group this device left is left at its hub too (docs/decisions.md D17): there it stops counting
// against the device's groups and delivers it nothing more, without waiting for a member to commit the
// Remove. Not before its own messages there are settled, though: after the departure the hub hands this
// device nothing of the group, echoes included, and an own message whose answer was lost would then be
// reported not sent although the others have it (groups/outbox.ts). Until done (`departedAt`),
// `departPendingSince` stays in the group record, and the follow-up work (after every sync and pushed batch, and on its timer
// while this is outstanding) tries again: at once after a first failure (a hiccup at leave time), then
// backing off from a minute to half an hour (a hub that is gone costs a timeout per try), for two weeks.

/** After this long a departure still not done is given up (the hub is gone, or keeps refusing). */
export const DEPARTURE_GIVE_UP_SECONDS = 14 * 24 * 3600;
const RETRY_FIRST_MS = 60_000;
const RETRY_MAX_MS = 30 * 60_000;

/** Each group's failed departures in this process, and when the last was tried (not persisted). */
const tries = new WeakMap<GroupHandle, { failures: number; at: number }>();

/** How long after the last try the next may run: none after one failure, then doubling from a minute. */
function retryDelay(failures: number): number {
  return failures <= 1 ? 0 : Math.min(RETRY_FIRST_MS * 2 ** (failures - 2), RETRY_MAX_MS);
}

/**
 * Whether the group is left here and its departure at the hub is still to do, and can be done now. A
 * group left before departures existed has no record of either: it is departed once too.
 */
export function departureDue(g: GroupHandle): boolean {
  if (g.record.status !== "left" || g.record.departedAt !== undefined) return false;
  // An own message with no known outcome waits for its echo; one with the hub's number does not.
  return !(g.record.outbox ?? []).some((e) => e.seq === undefined);
}

/** Whether the follow-up work would try a departure now (departureDue, and not tried a moment ago). */
export function departureToTry(ctx: DeviceContext, g: GroupHandle): boolean {
  const tried = tries.get(g);
  return departureDue(g) && (tried === undefined || ctx.clock() - tried.at >= retryDelay(tried.failures));
}

/** Leaves the group at its hub if that is due; throws what the hub answered otherwise. */
async function depart(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  if (!departureDue(g)) return;
  // A group left before departures existed: its two weeks count from the first try.
  if (g.record.departPendingSince === undefined) {
    g.record.departPendingSince = ctx.nowSeconds();
    await ctx.saveGroup(g);
  }
  try {
    await ctx.delivery(g.record.hub).depart(g.record.groupId);
  } catch (e) {
    // A hub that does not know the group has nothing to stop.
    if (!(e instanceof ProtocolError && e.code === "unknown_group")) {
      if (ctx.nowSeconds() - g.record.departPendingSince < DEPARTURE_GIVE_UP_SECONDS) {
        tries.set(g, { failures: (tries.get(g)?.failures ?? 0) + 1, at: ctx.clock() });
        throw e;
      }
      ctx.emit({
        type: "error",
        groupId: g.record.groupId,
        operation: "leave at the hub",
        message: `given up after two weeks; the hub still counts this device in the group until a member removes it (last answer: ${e instanceof Error ? e.message : String(e)})`,
      });
    }
  }
  tries.delete(g);
  g.record.departPendingSince = undefined;
  g.record.departedAt = ctx.nowSeconds();
  await ctx.saveGroup(g);
}

/**
 * The follow-up work's part: each departure due and not tried a moment ago. A hub that cannot be
 * reached or refuses gives an `error` event (through `attempt`), and nothing else waits for it.
 */
export async function departDueGroups(
  ctx: DeviceContext,
  attempt: (operation: string, groupId: string, work: () => Promise<unknown>) => Promise<void>,
): Promise<void> {
  for (const g of [...ctx.groups.values()]) {
    if (departureToTry(ctx, g)) await attempt("leave at the hub", g.record.groupId, () => depart(ctx, g));
  }
}

/**
 * Right after `leave`: an unreachable or refusing hub does not undo the leave (the keys are gone
 * already); the follow-up work tries again.
 */
export async function departAfterLeaving(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  try {
    await depart(ctx, g);
  } catch (e) {
    if (!(e instanceof ServiceUnavailableError || e instanceof ProtocolError)) throw e;
    ctx.emit({ type: "error", groupId: g.record.groupId, operation: "leave at the hub", message: e.message });
  }
}
