import { bytesEqual, credentialIdentity, deviceIdText, verifyLeafCertificate } from "@mastodon-mls/bridge";
import {
  checkAttribution,
  decodeCleartext,
  formatAcct,
  fromBase64url,
  parseCanonicalIdentity,
} from "@mastodon-mls/protocol";
import {
  acceptAll,
  bytesToBase64,
  emptyPskIndex,
  processMessage,
  type ClientState,
  type LeafNode,
  type MLSMessage,
} from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import { checkIdOwnership, checkTargetAuthor } from "./authorship.js";
import { blockedAccts } from "./blocking.js";
import { decodeMessage, messageHash } from "../mls/codec.js";
import { settleEcho } from "./outbox.js";
import { membershipTagVerifies, verifiedSigner } from "../mls/commitSigner.js";
import { checkLeaves, diffMembers, leavesOf } from "../mls/leaves.js";
import { screenIncoming } from "../mls/screening.js";
import { senderLeafOf } from "../mls/sender.js";
import type { BufferedMessage, HistoryEntry, PendingCommitRecord } from "../store/schemas.js";
import {
  deletePendingFiles,
  discardPending,
  promotePending,
  queuedForRetry,
  stillLeaving,
} from "./commitPipeline.js";
import { noteRejectedCommit, rejectionReason, stuckFork, stuckReason } from "./forks.js";
import { rememberProcessed } from "./processedCommits.js";
import {
  noteCommitFromLaterState,
  noteMessagesFromLaterState,
  restoredReason,
  sentFromLaterState,
} from "./restored.js";

/**
 * At most this many future-epoch messages are kept per group, and at most this many bytes of them (as
 * stored, base64): beyond either, they become undecryptable events. An honest hub sends a commit before
 * the messages of the epoch it opens, so only a hostile one fills this; the byte bound keeps it from
 * making every later save of the group rewrite gigabytes, or fail outright.
 */
const MAX_BUFFERED = 1000;
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Changes waiting to be made again in a group (one per lost commit; only a hostile hub makes many). */
const MAX_RETRY_INTENTS = 16;

function bufferedBytes(buffered: readonly BufferedMessage[]): number {
  return buffered.reduce((sum, b) => sum + b.message.length, 0);
}

/**
 * Done with, or to wait for the commit opening the epoch it is for: its own, as the message says (the
 * item's `epoch` is the hub's word, and a message kept under a wrong one is retried before its time).
 */
type Outcome = "done" | { waitFor: bigint };

/** The item, kept under the epoch the message itself is for. */
function waiting(item: BufferedMessage, outcome: { waitFor: bigint }): BufferedMessage {
  return { ...item, epoch: Number(outcome.waitFor) };
}

/**
 * One group message from the hub, in order. Everything that cannot be processed becomes an event with
 * its reason; nothing is dropped silently. The group record (state, last sequence number, buffer) is
 * written before returning, so the caller may acknowledge the cursor afterwards.
 */
export async function receiveGroupMessage(
  ctx: DeviceContext,
  g: GroupHandle,
  item: BufferedMessage,
): Promise<void> {
  if (item.seq <= g.record.lastSeq) return; // processed before (redelivery after a crash or a resumed stream)
  g.record.lastSeq = item.seq;
  const lost: LostPending = {};
  const outcome = await handle(ctx, g, item, lost);
  if (outcome !== "done") {
    if (g.record.buffered.length >= MAX_BUFFERED) {
      emitUndecryptable(ctx, g, item.seq, "too many messages waiting for a missing commit");
    } else if (bufferedBytes(g.record.buffered) + item.message.length > MAX_BUFFERED_BYTES) {
      emitUndecryptable(ctx, g, item.seq, "too many bytes of messages waiting for a missing commit");
    } else {
      g.record.buffered = [...g.record.buffered, waiting(item, outcome)];
    }
  }
  await drainBuffer(ctx, g, lost);
  if (g.record.status === "active") await ctx.saveGroup(g);
  // A pending commit found lost: its file goes only now, after the record that holds its change (written
  // here, or by markLeft). Saving the record before the winning commit is processed would write its seq
  // as done with the state still before it: a crash then, and the device never processes that commit.
  if (lost.pending !== undefined) await deletePendingFiles(ctx, g, lost.pending);
}

/** A pending commit `handle` found lost, whose file is to go once the group record is written. */
interface LostPending {
  pending?: PendingCommitRecord;
}

/** Retries buffered messages whose epoch has been reached, oldest first, until nothing more moves. */
async function drainBuffer(ctx: DeviceContext, g: GroupHandle, lost: LostPending): Promise<void> {
  for (;;) {
    const epoch = g.state?.groupContext.epoch;
    if (epoch === undefined) {
      g.record.buffered = [];
      return;
    }
    const ready = g.record.buffered.find((b) => BigInt(b.epoch) <= epoch);
    if (ready === undefined) return;
    g.record.buffered = g.record.buffered.filter((b) => b !== ready);
    const outcome = await handle(ctx, g, ready, lost);
    // Kept under a label of the hub's (a record written before messages were kept under their own
    // epoch): kept again under its own, which is not reached yet, so the drain goes on with the rest.
    if (outcome !== "done") g.record.buffered = [...g.record.buffered, waiting(ready, outcome)];
  }
}

function emitUndecryptable(ctx: DeviceContext, g: GroupHandle, seq: number, reason: string): void {
  ctx.emit({ type: "undecryptable", groupId: g.record.groupId, seq, reason });
}

function messageEpoch(msg: MLSMessage): bigint | undefined {
  if (msg.wireformat === "mls_private_message") return msg.privateMessage.epoch;
  if (msg.wireformat === "mls_public_message") return msg.publicMessage.content.epoch;
  return undefined;
}

async function handle(
  ctx: DeviceContext,
  g: GroupHandle,
  item: BufferedMessage,
  lost: LostPending,
): Promise<Outcome> {
  const state = g.state;
  if (state === undefined) return "done";
  let bytes: Uint8Array;
  let msg: MLSMessage;
  try {
    bytes = fromBase64url(item.message);
    msg = decodeMessage(bytes);
  } catch (e) {
    emitUndecryptable(ctx, g, item.seq, reason(e));
    return "done";
  }
  const epoch = messageEpoch(msg);
  if (epoch === undefined) {
    emitUndecryptable(ctx, g, item.seq, `a ${msg.wireformat} is not a group message`);
    return "done";
  }
  const isCommit =
    msg.wireformat === "mls_public_message" && msg.publicMessage.content.contentType === "commit";

  if (item.sender === ctx.deviceId) {
    // Our own message, back from the hub. An application message is in the outbox or the history (and
    // cannot be decrypted by its sender anyway): its echo settles a copy a crash left in the outbox; one
    // sent from a state this directory no longer has is the exception, read back below (D23). Our
    // commit: if still pending, this proves the hub accepted it.
    if (isCommit && g.pending !== undefined && messageHash(bytes) === g.pending.commitHash) {
      await promotePending(ctx, g);
      return "done";
    }
    if (isCommit && epoch === state.groupContext.epoch) {
      // For the epoch we are in, yet not pending: if this device signed it, it was sent from a state this
      // directory no longer has (D23). If not, the label is only the hub's word (it holds no member's key,
      // FORK-1): the commit is processed below as anyone's, so that a hub cannot take this device out of
      // the group, blaming a restored copy, by relabelling another member's commit or making one up.
      if ((await verifiedSigner(msg, state, ctx.cs))?.leafIndex === state.privatePath.leafIndex) {
        noteCommitFromLaterState(ctx, g, item.seq, Number(epoch));
        return "done";
      }
    } else if (!(await sentByAnotherMember(ctx, state, msg))) {
      if (msg.wireformat === "mls_private_message") {
        if ((g.record.outbox?.length ?? 0) > 0) await settleEcho(ctx, g, messageHash(bytes), item.seq);
        if (await sentFromLaterState(ctx, state, msg.privateMessage)) {
          // Said once it is known to be ours and new: decrypted, its signature verified, not in the history.
          if (await receiveApplication(ctx, g, state, msg, item, { own: true })) {
            noteMessagesFromLaterState(ctx, g);
          }
        }
      }
      return "done";
    }
    // Otherwise the label is the hub's word against another member's key (OWN-4): read as anyone's.
  }

  if (isCommit && g.pending !== undefined && BigInt(g.pending.epoch) === epoch) {
    // Someone else's commit won the epoch our pending commit was built on: the change is made again later
    // (followUp), by this process or the next; it is on disk before the pending commit goes (its file is
    // deleted by receiveGroupMessage once the group record is written).
    if (!queuedForRetry(g, g.pending.intent)) {
      g.record.retryIntents = [...(g.record.retryIntents ?? []), g.pending.intent].slice(-MAX_RETRY_INTENTS);
    }
    lost.pending = g.pending;
    g.pending = undefined;
  }
  const current = state.groupContext.epoch;
  if (epoch > current) {
    // A device that could not process an accepted commit never reaches a later epoch: say so for each
    // such message rather than keep it forever.
    const stuck = stuckFork(g.record);
    if (stuck !== undefined) {
      emitUndecryptable(ctx, g, item.seq, stuckReason(stuck));
      return "done";
    }
    // Nor does a copy older than a commit this device sent itself (D23): the epochs after it are the
    // group's, not this state's.
    if (g.record.restoredBehind !== undefined) {
      emitUndecryptable(ctx, g, item.seq, restoredReason(g.record.restoredBehind));
      return "done";
    }
    // ts-mls fails opaquely on a future epoch: wait for the commit that opens it.
    return { waitFor: epoch };
  }
  if (msg.wireformat === "mls_public_message" && epoch < current) {
    // A handshake for an epoch we have left. A proposal is simply superseded; a commit means a fork.
    if (isCommit) emitUndecryptable(ctx, g, item.seq, `a commit for past epoch ${epoch} (now ${current})`);
    return "done";
  }
  // From here on the message is for the epoch this device is in. A commit that fails now is one the hub
  // accepted and this device cannot follow: a fork, reported to the hub (forks.ts). Its sequence number
  // is done, so it is never tried again.
  try {
    await screenIncoming(msg, state);
  } catch (e) {
    emitUndecryptable(ctx, g, item.seq, reason(e));
    if (isCommit) {
      // A reference that does not resolve here may be a proposal the hub kept from this device (FORK-5).
      const signerAnswers = rejectionReason(e, "screening") !== "SCR-10";
      await rejectCommit(ctx, g, state, item, msg, bytes, rejectionReason(e, "screening"), signerAnswers);
    }
    return "done";
  }

  if (msg.wireformat === "mls_private_message") {
    await receiveApplication(ctx, g, state, msg, item);
    return "done";
  }
  if (msg.wireformat !== "mls_public_message") return "done"; // screening admits no other kind
  let result;
  try {
    result = await processMessage(msg, state, emptyPskIndex, acceptAll, ctx.cs);
  } catch (e) {
    if (removesLeaf(msg, state, state.privatePath.leafIndex)) {
      // This device is removed, and (a re-add: `readdDevices`) a new leaf of it takes the old one's place
      // in the same commit. ts-mls 1.6.4 counts a device as removed only when its leaf ends up blank, so it
      // tries the update path with the old leaf's keys and throws. Removed is what this is: the Welcome
      // that follows brings the device back. Not a fork: the commit is one the hub accepted from a member.
      await markLeft(ctx, g);
      return "done";
    }
    emitUndecryptable(ctx, g, item.seq, `could not process: ${reason(e)}`);
    if (isCommit) {
      // What the signature does not cover (the tags) may be the hub's doing: only a tag made by a member
      // of the epoch leaves the failure to the signer (FORK-5).
      const signerAnswers = await membershipTagVerifies(msg, state, ctx.cs);
      await rejectCommit(ctx, g, state, item, msg, bytes, rejectionReason(e, "processing"), signerAnswers);
    }
    return "done";
  }
  if (result.kind !== "newState") return "done";
  const next = result.newState;
  if (next.groupActiveState.kind === "removedFromGroup") {
    await markLeft(ctx, g);
    return "done";
  }
  g.state = next;
  const content = msg.publicMessage.content;
  if (isCommit) {
    // Screening let only a member sender through (SCR-5), and ts-mls verified its signature.
    if (content.sender.senderType === "member") {
      rememberProcessed(g.record, state, content.sender.leafIndex, messageHash(bytes));
    }
    await afterCommit(ctx, g, state, next);
  } else await noteLeaveRequest(ctx, g, state, content);
  return "done";
}

/**
 * OWN-4: whether a message the hub labels as this device's own was sent by another member's leaf, as its
 * sender data (a PrivateMessage) or its verified signature (a proposal of the current epoch) shows. Such
 * a message is no echo, and skipping it would drop another member's message on the hub's word.
 */
async function sentByAnotherMember(
  ctx: DeviceContext,
  state: ClientState,
  msg: MLSMessage,
): Promise<boolean> {
  const own = state.privatePath.leafIndex;
  if (msg.wireformat === "mls_private_message") {
    const sender = await senderLeafOf(state, msg.privateMessage, ctx.cs);
    return sender !== undefined && sender.leafIndex !== own;
  }
  const signer = await verifiedSigner(msg, state, ctx.cs);
  return signer !== undefined && signer.leafIndex !== own;
}

/**
 * A commit of the epoch this device is in (`state`'s) that it cannot follow: a fork (forks.ts), named after
 * the member whose signature it carries if one verifies — the hub's label on it is its word only.
 */
async function rejectCommit(
  ctx: DeviceContext,
  g: GroupHandle,
  state: ClientState,
  item: BufferedMessage,
  msg: MLSMessage,
  bytes: Uint8Array,
  why: string,
  signerAnswers: boolean,
): Promise<void> {
  const signer = await verifiedSigner(msg, state, ctx.cs);
  const epoch = Number(state.groupContext.epoch);
  noteRejectedCommit(ctx, g, item, epoch, messageHash(bytes), why, signer, signerAnswers);
}

/** Whether a commit removes this leaf, by value or by reference to a proposal held this epoch. */
function removesLeaf(msg: MLSMessage, state: ClientState, leaf: number): boolean {
  if (msg.wireformat !== "mls_public_message" || msg.publicMessage.content.contentType !== "commit")
    return false;
  return msg.publicMessage.content.commit.proposals.some((p) => {
    const proposal =
      p.proposalOrRefType === "proposal"
        ? p.proposal
        : state.unappliedProposals[bytesToBase64(p.reference)]?.proposal;
    return proposal?.proposalType === "remove" && proposal.remove.removed === leaf;
  });
}

/**
 * A Remove proposed by a member for a leaf of its own account is a leave request (DESIGN §9). It is
 * remembered until a commit removes that leaf: if another commit closes the epoch without it, this
 * device commits the Remove itself (followUp), so nobody who left lingers in the tree.
 */
async function noteLeaveRequest(
  ctx: DeviceContext,
  g: GroupHandle,
  state: ClientState,
  content: Extract<MLSMessage, { wireformat: "mls_public_message" }>["publicMessage"]["content"],
): Promise<void> {
  if (content.contentType !== "proposal" || content.proposal.proposalType !== "remove") return;
  if (content.sender.senderType !== "member") return;
  const leaves = new Map(leavesOf(state.ratchetTree).map((l) => [l.leafIndex, l]));
  const sender = leaves.get(content.sender.leafIndex);
  const removed = leaves.get(content.proposal.remove.removed);
  if (sender === undefined || removed === undefined || sender.acct === "" || sender.acct !== removed.acct)
    return;
  // LEAVE-1: the same account, by the same account key. A leaf's credential is only its maker's word:
  // another member can add a leaf in bob's name, certified by a key of its own, and have it "ask" for
  // bob's Remove, which would show bob as leaving of his own accord.
  if (!(await sameAccountKey(sender.node, removed.node))) return;
  if (g.record.leaving.some((l) => l.leafIndex === removed.leafIndex && l.deviceId === removed.deviceId))
    return;
  g.record.leaving = [
    ...g.record.leaving,
    { leafIndex: removed.leafIndex, deviceId: removed.deviceId, acct: removed.acct },
  ];
  ctx.emit({
    type: "member_leaving",
    groupId: g.record.groupId,
    acct: removed.acct,
    deviceId: removed.deviceId,
  });
}

/** Whether both leaves carry certificates (verified offline) by one account key. */
async function sameAccountKey(a: LeafNode, b: LeafNode): Promise<boolean> {
  const [ca, cb] = await Promise.all(
    [a, b].map((leaf) =>
      verifyLeafCertificate(leaf, undefined, { checkTimes: false }).catch(() => undefined),
    ),
  );
  return ca !== undefined && cb !== undefined && bytesEqual(ca.accountKey, cb.accountKey);
}

async function afterCommit(
  ctx: DeviceContext,
  g: GroupHandle,
  before: ClientState,
  after: ClientState,
): Promise<void> {
  const groupId = g.record.groupId;
  // A commit this device could process proves its state follows the group: whatever the hub deleted
  // unread (behind_retention) held no commit it lacks.
  g.record.behindRetention = undefined;
  const { added, removed } = diffMembers(before.ratchetTree, after.ratchetTree);
  if (added.length > 0) {
    // Someone this device blocks, added to a group it is in: said, not acted on (leaving is the user's
    // call here; only a Welcome to such a group is declined on its own: groups/blocking.ts).
    const blocking = blockedAccts(ctx);
    const blocked = added.filter((a) => blocking.has(a));
    ctx.emit({ type: "member_added", groupId, accts: added, ...(blocked.length > 0 ? { blocked } : {}) });
  }
  if (removed.length > 0) ctx.emit({ type: "member_removed", groupId, accts: removed });
  const { checks, newlyInvalid } = await checkLeaves(after.ratchetTree, g.record.leaves);
  g.record.leaves = checks;
  g.record.leaving = stillLeaving(g.record.leaving, after);
  for (const bad of newlyInvalid) {
    ctx.emit({
      type: "invalid_member",
      groupId,
      acct: bad.acct,
      deviceId: bad.deviceId,
      reason: bad.reason ?? "",
    });
  }
}

async function receiveApplication(
  ctx: DeviceContext,
  g: GroupHandle,
  state: ClientState,
  msg: Extract<MLSMessage, { wireformat: "mls_private_message" }>,
  item: BufferedMessage,
  /**
   * One of this device's own messages, read back after its state went back (groups/restored.ts): kept
   * unless its activity is in the history already.
   */
  opts: { own?: boolean } = {},
): Promise<boolean> {
  const groupId = g.record.groupId;
  const sender = await senderLeafOf(state, msg.privateMessage, ctx.cs);
  let result;
  try {
    if (sender === undefined) throw new Error("the sender data does not decrypt");
    result = await processMessage(msg, state, emptyPskIndex, acceptAll, ctx.cs);
  } catch (e) {
    emitUndecryptable(ctx, g, item.seq, reason(e));
    return false;
  }
  g.state = result.newState; // the ratchet moved on: that generation's key is gone
  if (result.kind !== "applicationMessage" || sender === undefined) return false;
  const identity = credentialIdentity(sender.leaf.credential);
  const deviceId = deviceIdText(sender.leaf.signaturePublicKey);
  if (identity === undefined) {
    emitUndecryptable(ctx, g, item.seq, "the sender's credential is not an acct: identity");
    return false;
  }
  const from = formatAcct(parseCanonicalIdentity(identity));
  let clear;
  try {
    clear = decodeCleartext(result.message);
  } catch (e) {
    ctx.emit({ type: "refused", groupId, from, seq: item.seq, reason: reason(e) });
    return false;
  }
  const entry: HistoryEntry = {
    v: 1,
    seq: item.seq,
    at: new Date().toISOString(),
    from,
    deviceId,
    own: opts.own === true,
    content: clear.kind === "activity" ? clear : { kind: "unsupported", type: clear.type },
  };
  if (clear.kind === "activity") {
    let broken = checkAttribution(clear.activity, identity);
    if (broken === undefined) {
      const known = await ctx.store.historyIdAuthors(groupId);
      // An own message the history holds (sent while a commit of ours was pending: see restored.ts).
      if (opts.own === true && known.activities.get(clear.activity.id) === from) return false;
      broken =
        checkIdOwnership(clear.activity, from, known) ?? checkTargetAuthor(clear.activity, from, known);
    }
    if (broken !== undefined) {
      ctx.emit({ type: "refused", groupId, from, seq: item.seq, reason: broken });
      return false;
    }
  }
  await ctx.store.appendHistory(groupId, [entry]);
  if (clear.kind === "unsupported") {
    ctx.emit({ type: "unsupported", groupId, from, deviceId, activityType: clear.type, seq: item.seq });
  } else if (clear.activity.type === "Create") {
    ctx.emit({
      type: "message",
      groupId,
      from,
      deviceId,
      note: clear.activity.object,
      activityId: clear.activity.id,
      seq: item.seq,
    });
  } else {
    ctx.emit({ type: "activity", groupId, from, deviceId, activity: clear.activity, seq: item.seq });
  }
  return true;
}

/** Removed by a commit or told so by the hub: the keys go, the history stays. */
export async function markLeft(
  ctx: DeviceContext,
  g: GroupHandle,
  opts: { byUs?: boolean } = {},
): Promise<void> {
  if (g.record.status === "left") return;
  await discardPending(ctx, g);
  g.state = undefined;
  g.record.status = "left";
  g.record.buffered = [];
  g.record.needsSelfUpdate = false;
  g.record.unsentInvitations = [];
  g.record.leaving = [];
  // Removed by a commit (or told so by the hub): the hub ended the membership itself, nothing to depart.
  if (opts.byUs !== true) g.record.departedAt = ctx.nowSeconds();
  await ctx.saveGroup(g);
  if (opts.byUs !== true) ctx.emit({ type: "removed_from_group", groupId: g.record.groupId });
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
