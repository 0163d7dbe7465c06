import type { DeviceContext } from "../context.js";
import { replaceLastResort } from "../keyPackages.js";
import { sendInvitations, settlePending, type PipelineDeps } from "./commitPipeline.js";
import { runIntent } from "./intents.js";

/**
 * Work that follows receiving (in `sync()` and after each pushed batch): settle commits whose outcome is
 * unknown, retry changes whose commit lost its epoch, replace a used last-resort KeyPackage, self-update
 * newly joined groups (DESIGN §2), post invitations that failed before. Each is flagged on disk, so a
 * crash only delays it. A failure here is an `error` event, retried next time: receiving already succeeded.
 */
export async function followUp(ctx: DeviceContext, deps: PipelineDeps): Promise<void> {
  const attempt = async (operation: string, groupId: string | undefined, work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (e) {
      ctx.emit({
        type: "error",
        ...(groupId !== undefined ? { groupId } : {}),
        operation,
        message: e instanceof Error ? e.message : String(e),
      });
    }
  };
  for (const g of [...ctx.groups.values()]) {
    if (g.record.status !== "active" || g.pending === undefined) continue;
    const intent = g.pending.intent;
    await attempt("settle pending commit", g.record.groupId, async () => {
      if ((await settlePending(ctx, g)) === "lost") await deps.rerun(g.record.groupId, intent);
    });
  }
  for (const { groupId, intent } of ctx.lostIntents.splice(0)) {
    await attempt(`retry ${intent.kind} after losing the epoch`, groupId, () => deps.rerun(groupId, intent));
  }
  if (ctx.device.lastResort.used) {
    await attempt("replace last-resort KeyPackage", undefined, () => replaceLastResort(ctx));
  }
  for (const g of [...ctx.groups.values()]) {
    if (g.record.status !== "active") continue;
    const groupId = g.record.groupId;
    if (g.record.needsSelfUpdate) {
      await attempt("self-update after joining", groupId, () =>
        runIntent(ctx, deps, groupId, { kind: "update" }),
      );
    }
    if (g.record.unsentInvitations.length > 0) {
      await attempt("send invitations", groupId, () => sendInvitations(ctx, g));
    }
  }
}
