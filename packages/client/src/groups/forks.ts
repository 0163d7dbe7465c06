import { ProtocolError, type CommitRejectedBody, type ForkRecord } from "@mastodon-mls/protocol";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ClientError, ServiceUnavailableError } from "../errors.js";
import type { ForkParty } from "../events.js";
import type { VerifiedSigner } from "../mls/commitSigner.js";
import { leavesOf } from "../mls/leaves.js";
import type { BufferedMessage, GroupFork, GroupRecord } from "../store/schemas.js";
import { checkNotice, type NoticeCheck } from "./processedCommits.js";
import { unlinkForkSender } from "./replacement.js";

// Forks and retention gaps (DESIGN §6, docs/decisions.md D5 and D10). The hub orders every group but cannot
// process MLS; when a member cannot process a commit the hub accepted, only the members can tell. The
// device that fails reports it (signed `commit-rejected`), and is stuck at that epoch for good: nothing
// later of the group can be read or sent from here. The hub tells every member (`forked`), who may go on
// — D5: the hub refuses nothing — and may re-create the group without the commit's sender
// (`recreateGroup`). A device told `behind_retention` missed messages the hub already deleted and cannot
// catch up either; a member must remove and re-add it.

export type GroupCondition = "ok" | "forked" | "stuck" | "needs_readd";

export interface ForkInfo {
  epoch: number;
  commitSeq: number;
  sender: ForkParty;
  /**
   * false: `sender` is only the hub's word (docs/protocol.md "Forks"): the commit's signature did not
   * verify under its key, or this device did not take that commit. Absent: a fork recorded before devices
   * checked, counted as proven, as it was then.
   */
  senderProven?: boolean;
  reporter: ForkParty;
  reason: string;
  /** This device could not process that commit. */
  stuck: boolean;
  /** For a fork this device found: whether the hub has the report. */
  report?: "pending" | "done" | "refused";
}

/** What is wrong with a group, for `groups()` and the CLI; `advice` says what the user can do. */
export interface GroupHealth {
  condition: GroupCondition;
  forks: ForkInfo[];
  /** `needs_readd`: messages up to this sequence number were deleted before this device read them. */
  missedUpTo?: number;
  /** The group that replaces this one (made here by `recreateGroup`, or announced by a member: D21). */
  replacedBy?: string;
  /** The group this one re-creates (D21). */
  replaces?: string;
  advice?: string;
}

function party(deviceId: string, acct: string | null): ForkParty {
  return { acct, deviceId };
}

export function forkInfo(f: GroupFork): ForkInfo {
  return {
    epoch: f.epoch,
    commitSeq: f.commitSeq,
    sender: party(f.sender, f.senderAcct),
    ...(f.senderProven === undefined ? {} : { senderProven: f.senderProven }),
    reporter: party(f.reporter, f.reporterAcct),
    reason: f.reason,
    stuck: f.stuck,
    ...(f.report === undefined ? {} : { report: f.report }),
  };
}

/** A device named by a fork: its acct, else the start of its device id. */
export function who(p: ForkParty): string {
  return p.acct ?? `device ${p.deviceId.slice(0, 12)}`;
}

/**
 * For a fork whose sender is only the hub's word, what to say of it instead of naming them as the sender:
 * a UI must not present the hub's label as fact (`recreateGroup` keeps them by default).
 */
export function unprovenSender(f: Pick<ForkInfo, "sender" | "senderProven" | "stuck">): string | undefined {
  if (f.senderProven !== false) return undefined;
  return f.stuck
    ? `the hub says ${who(f.sender)} sent it; its signature did not verify, so it may not be theirs`
    : `the hub says ${who(f.sender)} sent it; this device did not process that commit and cannot confirm it`;
}

/** The fork that stopped this device, if one did. */
export function stuckFork(record: GroupRecord): GroupFork | undefined {
  return record.forks?.find((f) => f.stuck);
}

/** This device, named in the advice so that another member can act on it. */
export interface SelfRef {
  acct: string;
  deviceId: string;
}

export function selfOf(ctx: DeviceContext): SelfRef {
  return { acct: ctx.device.acct, deviceId: ctx.deviceId };
}

/** What another member runs to give this device a fresh start in the group: its other devices stay. */
function readdAdvice(short: string, self: SelfRef | undefined): string {
  if (self === undefined) return "ask a member to re-add this device (mls-dm readd)";
  return (
    `ask a member to give this device a fresh start ` +
    `(mls-dm readd ${short} ${self.deviceId.slice(0, 12)}); ` +
    "your other devices stay in the group"
  );
}

export function groupHealth(record: GroupRecord, self?: SelfRef): GroupHealth {
  const forks = (record.forks ?? []).map(forkInfo);
  const base = {
    forks,
    ...(record.behindRetention === undefined ? {} : { missedUpTo: record.behindRetention.seq }),
    ...(record.replacedBy === undefined ? {} : { replacedBy: record.replacedBy }),
    ...(record.replaces === undefined ? {} : { replaces: record.replaces }),
  };
  if (record.status !== "active") return { condition: "ok", ...base };
  const short = record.groupId.slice(0, 8);
  const stuck = forks.find((f) => f.stuck);
  if (stuck !== undefined) {
    const hubSays = unprovenSender(stuck);
    return {
      condition: "stuck",
      ...base,
      advice:
        hubSays === undefined
          ? `this device could not process the commit of ${who(stuck.sender)} that ended epoch ${stuck.epoch} ` +
            `(${stuck.reason}) and cannot read or send in this group any more. Re-create the group without ` +
            `them (mls-dm recreate ${short}), or ${readdAdvice(short, self)}.`
          : `this device could not process the commit that ended epoch ${stuck.epoch} (${stuck.reason}) and ` +
            `cannot read or send in this group any more; ${hubSays}. Re-create the group (mls-dm recreate ` +
            `${short}: ${who(stuck.sender)} stays in it unless you name them with --without), or ` +
            `${readdAdvice(short, self)}.`,
    };
  }
  if (record.restoredBehind !== undefined) {
    return {
      condition: "needs_readd",
      ...base,
      advice:
        `this device's copy of the group was restored from an older copy: it is behind a commit it sent ` +
        `itself (#${record.restoredBehind.seq}) and cannot follow the group any more: ` +
        `${readdAdvice(short, self)}.`,
    };
  }
  if (record.behindRetention !== undefined) {
    return {
      condition: "needs_readd",
      ...base,
      advice:
        `messages up to #${record.behindRetention.seq} were deleted by the hub before this device read ` +
        `them, so it cannot catch up: ${readdAdvice(short, self)}.`,
    };
  }
  const last = forks.at(-1);
  if (last !== undefined) {
    const hubSays = unprovenSender(last);
    return {
      condition: "forked",
      ...base,
      advice:
        hubSays === undefined
          ? `${who(last.reporter)} could not process the commit of ${who(last.sender)} that ended epoch ` +
            `${last.epoch} (${last.reason}); this device is fine and can go on. To continue without ` +
            `${who(last.sender)}: mls-dm recreate ${short}.`
          : `${who(last.reporter)} could not process the commit that ended epoch ${last.epoch} ` +
            `(${last.reason}); ${hubSays}. This device is fine and can go on. To continue in a new group: ` +
            `mls-dm recreate ${short} (${who(last.sender)} stays in it unless you name them with --without).`,
    };
  }
  return { condition: "ok", ...base };
}

/**
 * Refuses to send or commit from a device that cannot follow the group: its messages would be for an
 * epoch the others left, and it could not read the answers.
 */
export function assertCanWrite(ctx: DeviceContext, g: GroupHandle): void {
  const health = groupHealth(g.record, selfOf(ctx));
  if (health.condition === "stuck") {
    throw new ClientError("group_stuck", `group ${g.record.groupId}: ${health.advice}`);
  }
  if (health.condition === "needs_readd") {
    throw new ClientError("needs_readd", `group ${g.record.groupId}: ${health.advice}`);
  }
}

export function canWrite(g: GroupHandle): boolean {
  const c = groupHealth(g.record).condition;
  return c !== "stuck" && c !== "needs_readd";
}

/** The acct of a device in the group as this device knows it, or null. */
function acctOfDevice(g: GroupHandle, deviceId: string): string | null {
  const leaf =
    g.state === undefined ? undefined : leavesOf(g.state.ratchetTree).find((l) => l.deviceId === deviceId);
  if (leaf !== undefined && leaf.acct !== "") return leaf.acct;
  const checked = Object.values(g.record.leaves).find((c) => c.deviceId === deviceId);
  return checked !== undefined && checked.acct !== "" ? checked.acct : null;
}

/** A short reason code for the hub (CommitRejectedBody): the screening rule, or that ts-mls refused it. */
export function rejectionReason(e: unknown, stage: "screening" | "processing"): string {
  if (stage === "processing") return "processing_failed";
  if (e instanceof ProtocolError) {
    const rule = /^(SCR-\d+)/.exec(e.message)?.[1];
    return rule ?? e.code;
  }
  return "screening_failed";
}

/**
 * This device could not process a commit the hub accepted for the epoch it is in (the caller has shown the
 * `undecryptable` event); `epoch` is the commit's own (the one it ends). The group is marked forked and
 * this device stuck, persisted with the group record by the caller; the commit is never processed again
 * (its sequence number is done). The report to the hub goes out once the batch is on disk
 * (`reportForks`). Messages waiting for a later epoch can never be read now: each becomes an
 * `undecryptable` event instead of lingering.
 */
export function noteRejectedCommit(
  ctx: DeviceContext,
  g: GroupHandle,
  item: Pick<BufferedMessage, "seq" | "sender">,
  epoch: number,
  commitHash: string,
  reason: string,
  signer: VerifiedSigner | undefined,
  /**
   * Whether the failure is the signer's doing (FORK-5): not when the hub could have caused it with the
   * signed content intact (a spoiled membership tag, a proposal withheld from this device).
   */
  signerAnswers = true,
): void {
  if (stuckFork(g.record) !== undefined) return;
  // The envelope's sender is the hub's word; a signature that verifies names the one who sent it. Without
  // one, the hub's word is all there is: kept, and marked as such (a hub can make up a commit, not sign it).
  const sender = signer?.deviceId ?? item.sender;
  if (signer !== undefined && signer.deviceId !== item.sender) {
    ctx.emit({
      type: "error",
      groupId: g.record.groupId,
      operation: "fork",
      message:
        `the hub labelled the commit that ended epoch ${epoch} as sent by device ${item.sender.slice(0, 12)}, ` +
        `but it is signed by ${who(party(sender, acctOfDevice(g, sender)))}: the fork names the signer`,
    });
  }
  const fork: GroupFork = {
    epoch,
    commitHash,
    commitSeq: item.seq,
    sender,
    senderAcct: acctOfDevice(g, sender),
    senderProven: signer !== undefined && signerAnswers,
    reporter: ctx.deviceId,
    reporterAcct: ctx.device.acct,
    reason,
    stuck: true,
    report: "pending",
  };
  g.record.forks = [...(g.record.forks ?? []).filter((f) => f.epoch !== fork.epoch), fork];
  ctx.emit(forkEvent(g.record.groupId, fork));
  for (const b of g.record.buffered) {
    ctx.emit({ type: "undecryptable", groupId: g.record.groupId, seq: b.seq, reason: stuckReason(fork) });
  }
  g.record.buffered = [];
}

/** Why a message of a later epoch cannot be read by a stuck device. */
export function stuckReason(fork: GroupFork): string {
  return (
    `this device could not process the commit that ended epoch ${fork.epoch} (group forked), so it ` +
    "cannot read anything later in this group"
  );
}

function forkEvent(groupId: string, f: GroupFork) {
  const { report: _, ...info } = forkInfo(f);
  return { type: "group_forked" as const, groupId, ...info, senderProven: f.senderProven !== false };
}

/**
 * The hub's `forked` notice (in log order, so after the commit it names). A fork this device reported
 * itself is only marked as known to the hub; any other is recorded and announced once. Its sender is the
 * hub's word: it is checked against the commits this device took (FORK-3, FORK-4), and a notice that
 * contradicts one of them is ignored — believing it would have `recreateGroup` leave an innocent member out.
 */
export async function noteForkNotice(
  ctx: DeviceContext,
  hub: string,
  item: Omit<ForkRecord, "seq"> & { group_id: string },
): Promise<void> {
  const g = ctx.groups.get(item.group_id);
  // A hub speaks only for the groups it hosts.
  if (g === undefined || g.record.hub !== hub || g.record.status !== "active") return;
  const check = checkNotice(g.record, ctx.deviceId, {
    epoch: item.epoch,
    commitHash: item.commit_hash,
    sender: item.sender,
  });
  if (check.kind === "contradicted") {
    ctx.emit({
      type: "error",
      groupId: g.record.groupId,
      operation: "fork notice",
      message: contradiction(ctx, g, item, check),
    });
    return;
  }
  // Links to this group its sender signed before the fork was known go (D21), whoever reported it.
  await unlinkForkSender(ctx, g, { sender: item.sender, senderAcct: acctOfDevice(g, item.sender) });
  const forks = g.record.forks ?? [];
  const known = forks.find((f) => f.epoch === item.epoch);
  if (known !== undefined) {
    if (known.report !== "pending") return;
    g.record.forks = forks.map((f) => (f === known ? { ...f, report: "done" as const } : f));
    await ctx.saveGroup(g);
    return;
  }
  if (check.kind === "other_commit") {
    ctx.emit({
      type: "error",
      groupId: g.record.groupId,
      operation: "fork notice",
      message:
        `the hub reports a fork over a commit that ended epoch ${item.epoch}, but delivered another commit ` +
        `for that epoch here: it showed members different commits. The sender it names is its word only`,
    });
  }
  const fork: GroupFork = {
    epoch: item.epoch,
    commitHash: item.commit_hash,
    commitSeq: item.commit_seq,
    sender: item.sender,
    senderAcct: acctOfDevice(g, item.sender),
    senderProven: check.kind === "proven",
    reporter: item.reporter,
    reporterAcct: acctOfDevice(g, item.reporter),
    reason: item.reason,
    stuck: false,
  };
  g.record.forks = boundForks([...forks, fork]);
  await ctx.saveGroup(g);
  ctx.emit(forkEvent(g.record.groupId, fork));
}

/** Why a notice naming a commit this device knows is ignored. */
function contradiction(
  ctx: DeviceContext,
  g: GroupHandle,
  item: { epoch: number; sender: string },
  check: Extract<NoticeCheck, { kind: "contradicted" }>,
): string {
  const signer =
    check.signer === ctx.deviceId ? "this device" : who(party(check.signer, acctOfDevice(g, check.signer)));
  if (check.epoch !== undefined && check.epoch !== item.epoch) {
    return (
      `the hub names the commit of ${signer} that ended epoch ${check.epoch} as the one that ended epoch ` +
      `${item.epoch}: ignored`
    );
  }
  if (check.signer === ctx.deviceId) {
    return `the hub says a commit of this device's (epoch ${item.epoch}) was sent by another device: ignored`;
  }
  const named = who(party(item.sender, acctOfDevice(g, item.sender)));
  return (
    `the hub says the commit that ended epoch ${item.epoch} was sent by ${named}, but this device ` +
    `processed it, signed by ${signer}: ignored`
  );
}

/** As many fork records as a hub keeps of a group (D5): more would only let one grow the record. */
const MAX_FORKS = 64;

/** The newest MAX_FORKS forks; one that makes this device stuck, or whose report is pending, stays. */
function boundForks(forks: GroupFork[]): GroupFork[] {
  const keep = (f: GroupFork) => f.stuck || f.report === "pending";
  let excess = forks.length - MAX_FORKS;
  if (excess <= 0) return forks;
  const byAge = [...forks].sort((x, y) => x.epoch - y.epoch);
  const dropped = new Set<GroupFork>();
  for (const f of byAge) {
    if (excess === 0) break;
    if (keep(f)) continue;
    dropped.add(f);
    excess--;
  }
  return forks.filter((f) => !dropped.has(f));
}

/**
 * Posts the reports of forks this device found and the hub does not have yet. Never throws: a hub that
 * cannot be reached leaves the report pending for the next sync (an `error` event says so); a refusal is
 * final (the hub says it is not that commit, or this device is no longer a member) and is shown.
 */
export async function reportForks(ctx: DeviceContext): Promise<void> {
  for (const g of ctx.groups.values()) {
    if (g.record.status !== "active") continue;
    for (const f of g.record.forks ?? []) {
      if (f.report !== "pending") continue;
      const body: CommitRejectedBody = { epoch: f.epoch, commit_hash: f.commitHash, reason: f.reason };
      let outcome: "done" | "refused";
      try {
        await ctx.delivery(g.record.hub).commitRejected(g.record.groupId, body);
        outcome = "done";
      } catch (e) {
        if (!(e instanceof ProtocolError || e instanceof ServiceUnavailableError)) throw e;
        const retry =
          e instanceof ServiceUnavailableError ||
          e.status >= 500 ||
          e.code === "rate_limited" ||
          e.code === "store_unavailable";
        ctx.emit({
          type: "error",
          groupId: g.record.groupId,
          operation: retry ? "report the fork to the hub (retried on the next sync)" : "report the fork",
          message: e.message,
        });
        if (retry) continue;
        outcome = "refused";
      }
      g.record.forks = (g.record.forks ?? []).map((x) =>
        x.epoch === f.epoch ? { ...x, report: outcome } : x,
      );
      await ctx.saveGroup(g);
    }
  }
}

/**
 * The hub's `behind_retention`: messages of the group up to `seq` were deleted before this device read
 * them. A group this device is in is marked as needing a re-add; for one it never joined (its Welcome was
 * deleted) only the event is shown — the advice is the same.
 */
export async function noteBehindRetention(
  ctx: DeviceContext,
  hub: string,
  groupId: string,
  seq: number,
): Promise<void> {
  const g = ctx.groups.get(groupId);
  if (g !== undefined) {
    if (g.record.hub !== hub || g.record.status !== "active") return;
    g.record.behindRetention = { seq: Math.max(seq, g.record.behindRetention?.seq ?? -1) };
    await ctx.saveGroup(g);
  }
  ctx.emit({ type: "behind_retention", groupId, seq });
}
