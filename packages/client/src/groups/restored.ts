import type { ClientState, PrivateMessage } from "ts-mls";
import type { DeviceContext, GroupHandle } from "../context.js";
import { senderLeafOf } from "../mls/sender.js";

// A device directory put back from an older copy (a restored backup) holds group states behind what the
// device sent since. The hub still has what it sent (until every member read it; else it says
// behind_retention, and the device needs a fresh start anyway): the echoes of its own messages and
// commits tell the device, which must then never use those messages' key generations again.

/**
 * Whether `pm`, an echo of this device's own, was sent from a state ahead of `state`: its generation is
 * one the sending ratchet of its epoch had not handed out yet. Of the current epoch, such a message can
 * only come from this device before its state went back; the caller reads it as a received one, so the
 * ratchet moves past its generation (and the history gets it back). Of an epoch this device has left
 * (kept for late messages), it may also be one sent while a commit of its own was pending (the state
 * that commit leads to was made before): the caller keeps it only if the history lacks it.
 */
export async function sentFromLaterState(
  ctx: DeviceContext,
  state: ClientState,
  pm: PrivateMessage,
): Promise<boolean> {
  const secretTree =
    pm.epoch === state.groupContext.epoch
      ? state.secretTree
      : state.historicalReceiverData.get(pm.epoch)?.secretTree;
  if (secretTree === undefined) return false;
  // The leaf index of a member stays until it is removed; a re-added device starts a new record.
  const own = state.privatePath.leafIndex;
  const sender = await senderLeafOf(state, pm, ctx.cs);
  if (sender === undefined || sender.leafIndex !== own) return false;
  // A leaf's ratchet sits at node 2 × leaf of the secret tree; `generation` is the next one to hand out.
  const next = secretTree[2 * own]?.application.generation;
  return next !== undefined && sender.generation >= next;
}

/** Shown once per group and process: the state is older than messages this device sent. */
const noticed = new WeakSet<GroupHandle>();

export function noteMessagesFromLaterState(ctx: DeviceContext, g: GroupHandle): void {
  if (noticed.has(g)) return;
  noticed.add(g);
  ctx.emit({
    type: "error",
    groupId: g.record.groupId,
    operation: "read own messages",
    message:
      "this device's copy of the group is older than messages it sent (was its directory restored from " +
      "an older copy?): they are read back into the history, and their keys are not used again",
  });
}

/**
 * An own commit for the epoch this device is in, which it has no record of: it was sent from a later
 * state, now gone. The device cannot process its own commit without that state, so it cannot follow
 * the group past it and must be given a fresh start (like a device the hub left behind).
 */
export function noteCommitFromLaterState(
  ctx: DeviceContext,
  g: GroupHandle,
  seq: number,
  epoch: number,
): void {
  g.record.restoredBehind = { seq, epoch };
  ctx.emit({
    type: "error",
    groupId: g.record.groupId,
    operation: "read own commit",
    message:
      `this device's copy of the group is older than a commit it sent (#${seq}, ending epoch ${epoch}; was ` +
      "its directory restored from an older copy?), so it cannot follow the group any more",
  });
}

/** Why a message of an epoch after such a commit cannot be read here. */
export function restoredReason(behind: { seq: number; epoch: number }): string {
  return (
    `this device's copy of the group is older than a commit it sent (#${behind.seq}, ending epoch ` +
    `${behind.epoch}): it cannot read the epochs after it until a member re-adds it`
  );
}
