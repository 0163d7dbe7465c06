import type { ClientState } from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ProtocolError } from "@mastodon-mls/protocol";
import { ServiceUnavailableError } from "../errors.js";
import type { GroupRecord } from "../store/schemas.js";
import { KEY_PACKAGE_CHECK_SECONDS, replaceLastResort, topUpKeyPackages } from "../keyPackages.js";
import { committableProposals } from "./changes.js";
import { sendInvitations, settlePending, stillLeaving, type PipelineDeps } from "./commitPipeline.js";
import { departDueGroups, departureDue } from "./departure.js";
import { canWrite, reportForks } from "./forks.js";
import { runIntent } from "./intents.js";

/** DESIGN §2: every device gives its leaf fresh keys at least weekly. */
export const SELF_UPDATE_INTERVAL_SECONDS = 7 * 24 * 3600;
/** The longest a listening device waits, at random, before committing proposals it received (DESIGN §9). */
export const PROPOSAL_HOLD_MAX_MS = 3_000;

export interface FollowUpOptions {
  /**
   * While listening: how long (ms) to wait before committing proposals first seen now — every listening
   * member of a group gets them at once, and without a spread they would all build a commit (O(members)
   * of work each) for the hub to refuse all but one. The one that commits first ends the others' wait:
   * its commit arrives and leaves them nothing to commit. Absent (`sync()`): commit at once.
   */
  proposalHoldMs?: () => number;
}

/** Whether this device holds proposals of the group to commit (DESIGN §9), or Removes of members that asked to leave. */
function hasProposalsToCommit(record: GroupRecord, state: ClientState): boolean {
  return (
    Object.keys(committableProposals(state)).length > 0 || stillLeaving(record.leaving, state).length > 0
  );
}

/**
 * Milliseconds until this device may commit the group's proposals (0: now). Starts the wait the first
 * time it is asked about proposals, when `proposalHoldMs` is given.
 */
function proposalWait(ctx: DeviceContext, groupId: string, opts: FollowUpOptions): number {
  if (opts.proposalHoldMs === undefined) return 0;
  const now = performance.now();
  let due = ctx.proposalHolds.get(groupId);
  if (due === undefined) {
    const hold = opts.proposalHoldMs();
    // A wait that is not a finite number would never end: the proposals would never be committed here.
    due = now + (Number.isFinite(hold) ? Math.max(0, hold) : 0);
    ctx.proposalHolds.set(groupId, due);
  }
  return Math.max(0, due - now);
}

/**
 * Milliseconds until the earliest wait of `proposalWait` that has not ended ends (undefined: none). One
 * that ended and whose commit failed is retried with the rest of the follow-up work, not sooner.
 */
export function nextProposalHold(ctx: DeviceContext, since = performance.now()): number | undefined {
  // `since`: when the last follow-up run started; a wait that ended after that may have been skipped by it.
  const now = performance.now();
  const ahead = [...ctx.proposalHolds.values()].filter((due) => due > since);
  return ahead.length === 0 ? undefined : Math.max(0, Math.min(...ahead) - now);
}

/**
 * Work that follows receiving (in `sync()` and after each pushed batch): settle commits whose outcome is
 * unknown, retry changes whose commit lost its epoch, replace a used last-resort KeyPackage, commit the
 * proposals received (a member's `leave`, DESIGN §9), self-update newly joined groups and groups whose
 * own leaf is over a week old (DESIGN §2), post invitations that failed before. Each is flagged on disk,
 * so a crash only delays it. A failure here is an `error` event, retried next time: receiving already
 * succeeded.
 */
export async function followUp(
  ctx: DeviceContext,
  deps: PipelineDeps,
  opts: FollowUpOptions = {},
): Promise<void> {
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
  // Fork reports a hub could not take before (reportForks never throws).
  await reportForks(ctx);
  await departDueGroups(ctx, attempt);
  for (const g of [...ctx.groups.values()]) {
    if (g.record.status !== "active" || g.pending === undefined) continue;
    const intent = g.pending.intent;
    await attempt("settle pending commit", g.record.groupId, async () => {
      if ((await settlePending(ctx, g)) === "lost") await deps.rerun(g.record.groupId, intent);
    });
  }
  for (const g of [...ctx.groups.values()]) await retryLostIntents(ctx, deps, g);
  if (ctx.device.lastResort.used) {
    await attempt("replace last-resort KeyPackage", undefined, () => replaceLastResort(ctx));
  }
  await attempt("top up KeyPackages", undefined, () => topUpKeyPackages(ctx));
  for (const groupId of [...ctx.proposalHolds.keys()]) {
    if (!ctx.groups.has(groupId)) ctx.proposalHolds.delete(groupId);
  }
  for (const groupId of [...ctx.groups.keys()]) {
    // Re-read before each step: the step before may have removed us or changed the state.
    const active = () => {
      const g = ctx.groups.get(groupId);
      return g?.record.status === "active" && g.state !== undefined
        ? { handle: g, state: g.state }
        : undefined;
    };
    let now = active();
    // A device stuck after a fork, or behind retention, cannot commit: trying would only fail each time.
    if (now === undefined || !canWrite(now.handle)) {
      ctx.proposalHolds.delete(groupId);
      continue;
    }
    const { handle, state } = now;
    if (hasProposalsToCommit(handle.record, state)) {
      if (proposalWait(ctx, groupId, opts) === 0) {
        await attempt("commit received proposals", groupId, () =>
          runIntent(ctx, deps, groupId, { kind: "proposals" }),
        );
        // Committed: the next proposals (even in the batch that brings this commit back) wait anew.
        const after = active();
        if (after === undefined || !hasProposalsToCommit(after.handle.record, after.state)) {
          ctx.proposalHolds.delete(groupId);
        }
      }
    } else {
      // Nothing to commit (another member did, or this device): the next proposals start a new wait.
      ctx.proposalHolds.delete(groupId);
    }
    now = active();
    if (now === undefined) continue;
    if (now.handle.record.needsSelfUpdate) {
      await attempt("self-update after joining", groupId, () =>
        runIntent(ctx, deps, groupId, { kind: "update" }),
      );
    } else if (ctx.nowSeconds() - now.handle.record.ownLeafUpdatedAt > SELF_UPDATE_INTERVAL_SECONDS) {
      await attempt("weekly self-update", groupId, () => runIntent(ctx, deps, groupId, { kind: "update" }));
    }
    now = active();
    if (now !== undefined && now.handle.record.unsentInvitations.length > 0) {
      const h = now.handle;
      await attempt("send invitations", groupId, () => sendInvitations(ctx, h));
    }
  }
}

/**
 * Whether `followUp` has anything to do now: a fork report the hub has not taken, a pending commit, a
 * change that lost its epoch, a used last-resort KeyPackage, a KeyPackage count due for a check, a left
 * group still to be left at its hub (tried at most once a minute: groups/departure.ts), and in a
 * group this device can write to: proposals to commit (a member's `leave`), a self-update due (after
 * joining, weekly), invitations not posted yet. Cheap (no I/O, no crypto): `events()` asks it after every
 * operation to decide whether to keep a follow-up timer.
 */
export function hasOutstandingWork(ctx: DeviceContext): boolean {
  if (ctx.device.lastResort.used || ctx.keyPackageUsed) return true;
  const now = ctx.nowSeconds();
  if (now - (ctx.device.keyPackagesCheckedAt ?? ctx.device.createdAt) >= KEY_PACKAGE_CHECK_SECONDS)
    return true;
  for (const g of ctx.groups.values()) {
    if (departureDue(g)) return true;
    if (g.record.status !== "active") continue;
    if (g.pending !== undefined || (g.record.retryIntents?.length ?? 0) > 0) return true;
    if ((g.record.forks ?? []).some((f) => f.report === "pending")) return true;
    const state = g.state;
    if (state === undefined || !canWrite(g)) continue;
    if (g.record.needsSelfUpdate || now - g.record.ownLeafUpdatedAt > SELF_UPDATE_INTERVAL_SECONDS)
      return true;
    if (g.record.unsentInvitations.length > 0) return true;
    if (hasProposalsToCommit(g.record, state)) return true;
  }
  return false;
}

/**
 * Makes again, on the group's current state, the changes whose commit lost its epoch (`retryIntents`),
 * oldest first. Each leaves the record once tried, unless the group's hub could not be reached, failed or
 * asked to wait: then it and the changes after it are tried again by the next follow-up (nothing can be
 * committed in the group meanwhile). A change that another service fails (an invitee's directory that
 * does not answer) goes, with its `error` event, as the same change asked for directly would fail: kept,
 * it would be tried every follow-up for as long as that service is down. Making one twice is harmless: a
 * change already made builds no commit.
 */
export async function retryLostIntents(
  ctx: DeviceContext,
  deps: PipelineDeps,
  g: GroupHandle,
): Promise<void> {
  const groupId = g.record.groupId;
  for (const intent of [...(g.record.retryIntents ?? [])]) {
    // Another record of the group since (a re-add brought this device back, D20): not this one's changes,
    // and the one this handle holds is no longer the group's to write.
    if (ctx.groups.get(groupId) !== g || g.record.status !== "active") return;
    let keep = false;
    try {
      await deps.rerun(groupId, intent);
    } catch (e) {
      keep = mayAnswerLater(e) && !fromAnotherService(e, ctx.delivery(g.record.hub).baseUrl);
      ctx.emit({
        type: "error",
        groupId,
        operation: `retry ${intent.kind} after losing the epoch${keep ? " (tried again later)" : ""}`,
        message: e instanceof Error ? e.message : String(e),
      });
    }
    if (keep || ctx.groups.get(groupId) !== g) return;
    g.record.retryIntents = (g.record.retryIntents ?? []).filter((i) => i !== intent);
    await ctx.saveGroup(g);
  }
}

/** A failure named as another service's than `hub` (ServiceUnavailableError, ServiceRefusedError). */
function fromAnotherService(e: unknown, hub: string): boolean {
  const url = (e as { url?: unknown }).url;
  return typeof url === "string" && url !== hub;
}

/** A failure that says nothing about the change: no answer, a service failing, or asked to wait (429). */
function mayAnswerLater(e: unknown): boolean {
  return (
    e instanceof ServiceUnavailableError ||
    (e instanceof ProtocolError && (e.status >= 500 || e.code === "rate_limited"))
  );
}
