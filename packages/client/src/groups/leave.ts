import { ProtocolError } from "@mastodon-mls/protocol";
import { createProposal, encodeMlsMessage } from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ClientError } from "../errors.js";
import { leavesOf } from "../mls/leaves.js";
import { backoff } from "../util/backoff.js";
import { settlePending, type PipelineDeps } from "./commitPipeline.js";
import { departAfterLeaving } from "./departure.js";
import { canWrite } from "./forks.js";
import { markLeft } from "./receive.js";

/**
 * DESIGN §9 leave: propose the Remove of each of this account's leaves (a device cannot commit its own
 * removal), delete the group's state here, then leave the group at the hub (D17, groups/departure.ts: the
 * group stops counting against this device's groups there at once, not only once a member commits the
 * Remove). Any member holding the proposals commits them (followUp); a member that sees the
 * proposal lost to another commit commits the Remove itself. The history stays. Returns how many Removes
 * were proposed (0 when nobody else is left in the group).
 */
export async function leaveGroup(
  ctx: DeviceContext,
  deps: PipelineDeps,
  groupId: string,
): Promise<{ proposed: number }> {
  const first = ctx.activeGroup(groupId);
  if (!canWrite(first)) {
    // Stuck after a fork or behind retention: a proposal from this state is for an epoch the hub left
    // and would only be refused. The keys go here; the others still see this device until one removes it.
    await leaveHere(ctx, first);
    return { proposed: 0 };
  }
  // A commit of ours whose outcome is unknown decides the epoch: settle it (if it lost, so be it).
  if (first.pending !== undefined) await settlePending(ctx, first);
  for (let attempt = 0; attempt < ctx.retry.attempts; attempt++) {
    const g = ctx.activeGroup(groupId); // group_left if a commit removed us meanwhile
    const state = g.state;
    const own = state.privatePath.leafIndex;
    const leaves = leavesOf(state.ratchetTree);
    const mine = leaves.filter((l) => l.leafIndex === own || l.acct === ctx.device.acct);
    if (mine.length === leaves.length) {
      await leaveHere(ctx, g);
      return { proposed: 0 };
    }
    let s = state;
    const messages: Uint8Array[] = [];
    for (const leaf of mine) {
      const r = await createProposal(
        s,
        true,
        { proposalType: "remove", remove: { removed: leaf.leafIndex } },
        ctx.cs,
      );
      s = r.newState;
      messages.push(encodeMlsMessage(r.message));
    }
    let proposed = 0;
    try {
      for (const m of messages) {
        try {
          await ctx.delivery(g.record.hub).submit(groupId, m);
          proposed++;
        } catch (e) {
          // Posted before (a retry after a lost answer): signatures are deterministic, so the same bytes.
          if (
            e instanceof ProtocolError &&
            e.code === "screening_failed" &&
            /already accepted/.test(e.message)
          ) {
            proposed++;
            continue;
          }
          // Departed already (a leave that stopped before its state was deleted), or removed meanwhile:
          // out either way, and nothing to propose.
          if (e instanceof ProtocolError && e.code === "not_a_member") break;
          throw e;
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError && (e.code === "wrong_epoch" || e.code === "stale_epoch")) {
        await deps.syncHub(g.record.hub);
        await backoff(ctx.retry, attempt);
        continue;
      }
      throw e;
    }
    await leaveHere(ctx, g);
    return { proposed };
  }
  throw new ClientError(
    "commit_conflict",
    `the group's epoch kept moving; gave up after ${ctx.retry.attempts} attempts`,
  );
}

/** The keys go here, and the group is left at the hub now or, with own messages still waiting, later. */
async function leaveHere(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  g.record.departPendingSince = ctx.nowSeconds();
  await markLeft(ctx, g, { byUs: true });
  await departAfterLeaving(ctx, g);
}
