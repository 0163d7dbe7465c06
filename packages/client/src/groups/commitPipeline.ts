import { keyPackageRef } from "@mastodon-mls/bridge";
import { ProtocolError, WrongEpochDetails, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { isDeepStrictEqual } from "node:util";
import type { ClientState } from "ts-mls";
import { baseOf, loadPendingState, type DeviceContext, type GroupHandle } from "../context.js";
import { ClientError, ServiceUnavailableError } from "../errors.js";
import { decodeMessage, messageHash } from "../mls/codec.js";
import { checkLeaves, leavesOf, ownLeafKey } from "../mls/leaves.js";
import type { CommitIntent, LeavingDevice, PendingCommitRecord } from "../store/schemas.js";
import { allDone } from "../util/allDone.js";
import { backoff } from "../util/backoff.js";
import { assertCanWrite } from "./forks.js";
import { rememberCommit } from "./processedCommits.js";

// DESIGN §6/§9: a commit is saved as pending (with its new state) BEFORE it is posted, and becomes the
// group's state only once the hub accepted it — on 201, on a 409 naming our own commit as the winner, or
// on seeing our own commit come back in the inbox. When another commit won, the pending one is dropped,
// the winner is processed, and the intended change is rebuilt on the new state and tried again.
//
// The secrets ts-mls reports as `consumed` are never zeroed here: they share buffers with the previous
// state, and after a lost race that state must still process the winning commit (notes/ts-mls-facts.md).

export interface BuiltCommit {
  commit: Uint8Array;
  welcome?: Uint8Array;
  newState: ClientState;
  /** Accounts whose devices the commit adds. */
  invitees: string[];
}

/** Builds the commit for an intent against the current state; undefined when there is nothing to do. */
export type CommitBuilder = (state: ClientState) => Promise<BuiltCommit | undefined>;

/** How the hub answered a pending commit. */
export type Settlement = "accepted" | "lost" | "none";

/** What processing the hub's inbox needs from the pipeline, passed in to keep the modules acyclic. */
export interface PipelineDeps {
  /** Fetches and processes the hub's inbox (which processes a winning commit). */
  syncHub(hub: string): Promise<void>;
  /** Re-runs an intent whose commit lost, found after a restart. */
  rerun(groupId: string, intent: CommitIntent): Promise<void>;
}

export function isWrongEpoch(e: unknown): e is ProtocolError {
  return e instanceof ProtocolError && e.code === "wrong_epoch";
}

/** The winning commit's hash from a 409 wrong_epoch, if the hub named one. */
export function winningHash(e: ProtocolError): string | null {
  const parsed = WrongEpochDetails.safeParse(e.details ?? {});
  return parsed.success ? parsed.data.commit_hash : null;
}

export async function savePending(
  ctx: DeviceContext,
  g: GroupHandle,
  intent: CommitIntent,
  built: BuiltCommit,
  baseEpoch: bigint,
): Promise<PendingCommitRecord> {
  // The new state is written once, as the base snapshot it will be once accepted: promoting it then
  // writes only group.json's small delta.
  const { base, text } = await ctx.prepareBase(g.record.groupId, built.newState);
  const pending: PendingCommitRecord = {
    intent,
    epoch: Number(baseEpoch),
    commitHash: messageHash(built.commit),
    commit: toBase64url(built.commit),
    welcome: built.welcome === undefined ? null : toBase64url(built.welcome),
    newStateBase: base.name,
    invitees: built.invitees,
  };
  await ctx.store.writePendingWithBase(
    g.record.groupId,
    text === undefined ? undefined : { name: base.name, state: text },
    pending,
  );
  g.pending = pending;
  return pending;
}

/**
 * The hub accepted our pending commit: it becomes the group's state. With `invite`, the invitations of
 * its accounts (DESIGN §6: never before) are posted while this runs, and one write of the group records
 * both; those not taken stay in `unsentInvitations` for the next follow-up.
 */
export async function promotePending(
  ctx: DeviceContext,
  g: GroupHandle,
  newState?: ClientState,
  opts: { invite?: boolean } = {},
): Promise<void> {
  const p = g.pending;
  if (p === undefined) return;
  const invitees = [...new Set([...g.record.unsentInvitations, ...p.invitees])];
  const invited = opts.invite === true && invitees.length > 0 ? postInvitations(ctx, g, invitees) : undefined;
  const before = g.state;
  if (before !== undefined && before.groupContext.epoch > BigInt(p.epoch)) {
    // Already the group's state: a crash came between saving it and deleting pending.json, or the write
    // of it failed in this process (a full disk) after the state was taken in memory: it is written
    // (again) before pending.json goes. Loading the pending state again would bring back the epoch's
    // start and undo every message since.
    await ctx.saveGroup(g);
    await ctx.store.deletePending(g.record.groupId);
    g.pending = undefined;
    return;
  }
  if (newState !== undefined) {
    g.state = newState;
    if (p.newStateBase !== undefined) g.base = baseOf(p.newStateBase, newState);
  } else {
    const loaded = await loadPendingState(ctx.store, g.record.groupId, p);
    g.state = loaded.state;
    if (loaded.base !== undefined) g.base = loaded.base;
  }
  // DESIGN §2 weekly self-update: any commit of ours with an update path gives our leaf fresh keys.
  if (before === undefined || ownLeafKey(before) !== ownLeafKey(g.state)) {
    g.record.ownLeafUpdatedAt = ctx.nowSeconds();
  }
  g.record.leaving = stillLeaving(g.record.leaving, g.state);
  g.record.leaves = (await checkLeaves(g.state.ratchetTree, g.record.leaves)).checks;
  const sent = (await invited) ?? new Set<string>();
  g.record.unsentInvitations = invitees.filter((acct) => !sent.has(acct));
  if (p.intent.kind === "update") g.record.needsSelfUpdate = false;
  g.record.promoted = [...(g.record.promoted ?? []), p.commitHash].slice(-PROMOTED_KEPT);
  rememberCommit(g.record, { epoch: p.epoch, hash: p.commitHash, signer: ctx.deviceId });
  // The device record (KeyPackages this commit used) is another file: both are written side by side.
  await allDone([
    ctx.saveGroup(g),
    p.intent.kind === "add" || p.intent.kind === "readd"
      ? rememberAddedKeyPackages(ctx, fromBase64url(p.commit))
      : undefined,
  ]);
  // Only now: a crash before the group's write leaves the commit pending, to be settled with the hub.
  await ctx.store.deletePending(g.record.groupId);
  g.pending = undefined;
}

/** How many of its own accepted commits a group record remembers (settlePending). */
const PROMOTED_KEPT = 16;

/** How long a used KeyPackage ref is remembered: the directory's claim memo (10 minutes) and a margin. */
const ADDED_MEMORY_SECONDS = 15 * 60;

async function rememberAddedKeyPackages(ctx: DeviceContext, commitBytes: Uint8Array): Promise<void> {
  const msg = decodeMessage(commitBytes);
  if (msg.wireformat !== "mls_public_message" || msg.publicMessage.content.contentType !== "commit") return;
  const now = Math.floor(Date.now() / 1000);
  const kept = Object.entries(ctx.device.addedKeyPackages).filter(
    ([, at]) => at > now - ADDED_MEMORY_SECONDS,
  );
  for (const p of msg.publicMessage.content.commit.proposals) {
    if (p.proposalOrRefType === "proposal" && p.proposal.proposalType === "add") {
      kept.push([await keyPackageRef(p.proposal.add.keyPackage), now]);
    }
  }
  ctx.device = { ...ctx.device, addedKeyPackages: Object.fromEntries(kept) };
  await ctx.saveDevice();
}

/** Another commit won the epoch: forget ours (its state was never the group's). */
export async function discardPending(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  const p = g.pending;
  if (p === undefined) return;
  g.pending = undefined;
  await deletePendingFiles(ctx, g, p);
}

/** pending.json of a commit that lost, and the base snapshot of its state unless the group's names it. */
export async function deletePendingFiles(
  ctx: DeviceContext,
  g: GroupHandle,
  p: PendingCommitRecord,
): Promise<void> {
  await ctx.store.deletePending(g.record.groupId);
  const orphan = p.newStateBase;
  if (orphan !== undefined && orphan !== g.record.stateBase && orphan !== g.pending?.newStateBase) {
    await ctx.store.deleteGroupBases(
      g.record.groupId,
      [g.record.stateBase, g.pending?.newStateBase].filter((n) => n !== undefined),
    );
  }
}

/** Whether the group record holds this change to make again (`retryIntents`, groups/followUp.ts). */
export function queuedForRetry(g: GroupHandle, intent: CommitIntent): boolean {
  return (g.record.retryIntents ?? []).some((i) => isDeepStrictEqual(i, intent));
}

/**
 * Asks the hub about a pending commit whose outcome we do not know (a lost 201, a crash after posting):
 * posting the same bytes again either gets it accepted or a 409 that names the winner. Network failures
 * propagate and leave the pending commit in place.
 */
export async function settlePending(ctx: DeviceContext, g: GroupHandle): Promise<Settlement> {
  const p = g.pending;
  if (p === undefined) return "none";
  if (g.record.promoted?.includes(p.commitHash) === true) {
    // Taken already (its pending.json came back after a power loss): nothing to ask, nothing to redo.
    await ctx.store.deletePending(g.record.groupId);
    g.pending = undefined;
    return "none";
  }
  if (g.state !== undefined && g.state.groupContext.epoch > BigInt(p.epoch) && queuedForRetry(g, p.intent)) {
    // Found lost while receiving, its change kept in `retryIntents`; the process ended before its file
    // went (receive.ts). Settling it would make the change a second time.
    await discardPending(ctx, g);
    return "none";
  }
  const hub = ctx.delivery(g.record.hub);
  try {
    await hub.submit(
      g.record.groupId,
      Buffer.from(p.commit, "base64url"),
      p.welcome === null ? undefined : Buffer.from(p.welcome, "base64url"),
    );
    await promotePending(ctx, g);
    return "accepted";
  } catch (e) {
    if (isWrongEpoch(e) || (e instanceof ProtocolError && e.code === "stale_epoch")) {
      if (isWrongEpoch(e) && winningHash(e) === p.commitHash) {
        await promotePending(ctx, g);
        return "accepted";
      }
      await discardPending(ctx, g);
      return "lost";
    }
    throw e;
  }
}

/**
 * Runs one change to a group to completion: build, save pending, post, promote — rebuilding and retrying
 * (with backoff and jitter) when another commit wins the epoch. Returns the commit the hub accepted, or
 * undefined when the builder found nothing to do.
 */
export async function runCommit(
  ctx: DeviceContext,
  deps: PipelineDeps,
  groupId: string,
  intent: CommitIntent,
  build: CommitBuilder,
): Promise<BuiltCommit | undefined> {
  const g = ctx.activeGroup(groupId);
  if (g.pending !== undefined) {
    const earlier = g.pending.intent;
    if ((await settlePending(ctx, g)) === "lost") await deps.rerun(groupId, earlier);
  }
  for (let attempt = 0; attempt < ctx.retry.attempts; attempt++) {
    const current = ctx.activeGroup(groupId);
    // Catching up (below) may have found that this device cannot follow the group any more.
    assertCanWrite(ctx, current);
    const state = current.state;
    const built = await build(state);
    if (built === undefined) return undefined;
    const pending = await savePending(ctx, g, intent, built, state.groupContext.epoch);
    try {
      await ctx.delivery(g.record.hub).submit(groupId, built.commit, built.welcome);
    } catch (e) {
      if (isWrongEpoch(e)) {
        if (winningHash(e) !== pending.commitHash) {
          await discardPending(ctx, g);
          await deps.syncHub(g.record.hub);
          if (g.record.status !== "active")
            throw new ClientError("group_left", `removed from ${groupId} meanwhile`);
          await backoff(ctx.retry, attempt);
          continue;
        }
        // Our own commit, accepted earlier (its 201 lost): promoted below.
      } else if (e instanceof ServiceUnavailableError || (e instanceof ProtocolError && e.status >= 500)) {
        // The hub may or may not have accepted it (a 503 can come after its store committed): keep it
        // pending; the next operation or sync asks again. Only a 4xx is a refusal.
        throw new ClientError(
          "commit_outcome_unknown",
          `${e.message}; the change is kept and will be settled with the hub on the next sync`,
        );
      } else {
        // A refusal (screening, rate limit, not a member…): this commit will never be accepted.
        await discardPending(ctx, g);
        throw e;
      }
    }
    // Accepted. A failure from here on (a full disk…) leaves the commit pending, to be promoted when it
    // is settled with the hub; discarding it would leave this device behind the group, for good.
    await promotePending(ctx, g, built.newState, { invite: true });
    return built;
  }
  throw new ClientError(
    "commit_conflict",
    `other members' commits kept winning; gave up after ${ctx.retry.attempts} attempts`,
  );
}

/**
 * Posts the invitation pointer (DESIGN §6) for each account an accepted commit of ours added, to that
 * account's home delivery service. Failures stay in the record and are retried on the next sync.
 */
export async function sendInvitations(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  const sent = await postInvitations(ctx, g, g.record.unsentInvitations);
  if (sent.size > 0) {
    g.record.unsentInvitations = g.record.unsentInvitations.filter((acct) => !sent.has(acct));
    await ctx.saveGroup(g);
  }
}

/** The accounts whose invitation was taken; each failure is an `error` event. Never rejects. */
async function postInvitations(
  ctx: DeviceContext,
  g: GroupHandle,
  accts: readonly string[],
): Promise<ReadonlySet<string>> {
  const sent = new Set<string>();
  for (const acct of accts) {
    try {
      const home = await ctx.homeDeliveryOf(acct);
      await home.invite(acct, g.record.hub, g.record.groupId);
      sent.add(acct);
    } catch (e) {
      ctx.emit({
        type: "error",
        groupId: g.record.groupId,
        operation: `invite ${acct}`,
        message: e instanceof Error ? e.message : String(e),
      });
    }
  }
  return sent;
}

/** Leave requests whose device still sits at that leaf: the others are done. */
export function stillLeaving(leaving: LeavingDevice[], state: ClientState): LeavingDevice[] {
  if (leaving.length === 0) return leaving;
  const present = new Map(leavesOf(state.ratchetTree).map((l) => [l.leafIndex, l.deviceId]));
  return leaving.filter((l) => present.get(l.leafIndex) === l.deviceId);
}
