import { LIMITS, fromBase64url, type Activity } from "@mastodon-mls/protocol";
import type { DeviceContext, GroupHandle } from "../context.js";
import { messageHash } from "../mls/codec.js";
import type { HistoryEntry, OutboxEntry } from "../store/schemas.js";

// A message this device sends exists, until its history line is on disk, only as an outbox entry written
// with the state whose ratchet it moved, before it is posted (docs/decisions.md D15).
// So the line itself needs no fsync of its own: it is flushed in the background, and a crash anywhere
// loses nothing. After a crash the entry is settled by what the hub says:
//   - its echo comes back (the hub hands every member, the sender too, each accepted message): the line
//     is written with the echo's sequence number, unless it is already there;
//   - it carries the hub's sequence number (known accepted): the line is written if missing;
//   - a full read of its hub did not bring it back, and it is older than any request could still be in
//     flight: it was never accepted, and the device says so (`not_sent`) instead of keeping it silently.

/** Older than this, a post still unanswered can no longer be accepted (the request timeout is 30 s). */
export const NOT_SENT_AFTER_MS = 2 * 60_000;

/** The history line of an own message. */
function ownHistoryEntry(ctx: DeviceContext, seq: number, at: string, activity: Activity): HistoryEntry {
  return {
    v: 1,
    seq,
    at,
    from: ctx.device.acct,
    deviceId: ctx.deviceId,
    own: true,
    content: { kind: "activity", activity },
  };
}

/**
 * Keeps track of the history lines this process appended without an fsync, and flushes them in the
 * background, one group at a time. An entry leaves its group's outbox once its line is durable (the next
 * save of the group writes the outbox without it).
 */
export class HistoryFlusher {
  /** Outbox entries (by hash) whose history line this process has written, durable or not yet. */
  private readonly written = new Set<string>();
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(private readonly ctx: DeviceContext) {}

  wrote(hash: string): boolean {
    return this.written.has(hash);
  }

  /**
   * Appends the line of an accepted own message (no fsync) and schedules the flush that makes it durable.
   * Never throws: the hub has the message, and a line that could not be written now is written when the
   * entry (which keeps `seq` with the group's next save) is settled.
   */
  async appendLater(g: GroupHandle, entry: OutboxEntry, seq: number): Promise<void> {
    const groupId = g.record.groupId;
    entry.seq = seq;
    try {
      await this.ctx.store.appendHistory(
        groupId,
        [ownHistoryEntry(this.ctx, seq, entry.at, entry.activity)],
        { durable: false },
      );
    } catch (e) {
      this.reportFailure(groupId, e);
      return;
    }
    this.written.add(entry.hash);
    const previous = this.inFlight.get(groupId) ?? Promise.resolve();
    const flush = previous.then(() => this.flush(groupId, entry.hash));
    this.inFlight.set(groupId, flush);
    void flush.finally(() => {
      if (this.inFlight.get(groupId) === flush) this.inFlight.delete(groupId);
    });
  }

  private async flush(groupId: string, hash: string): Promise<void> {
    try {
      await this.ctx.store.flushHistory(groupId);
    } catch (e) {
      // The entry stays in the outbox, so nothing is lost: a later read settles it (the tail check finds
      // the line and fsyncs it then).
      this.written.delete(hash);
      this.reportFailure(groupId, e);
      return;
    }
    const g = this.ctx.groups.get(groupId);
    if (g?.record.outbox !== undefined) g.record.outbox = g.record.outbox.filter((e) => e.hash !== hash);
    this.written.delete(hash);
  }

  private reportFailure(groupId: string, e: unknown): void {
    this.ctx.emit({
      type: "error",
      groupId,
      operation: "writing a sent message to the history (it stays in the group's outbox; retried later)",
      message: e instanceof Error ? e.message : String(e),
    });
  }

  /** Resolves once every line appended so far is durable (or its flush failed and was reported). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight.values());
  }
}

/**
 * The echo of an own application message (`hash` of its bytes, `seq` the hub's number): settles its
 * outbox entry. True when the group record changed (the caller saves it).
 */
export async function settleEcho(
  ctx: DeviceContext,
  g: GroupHandle,
  hash: string,
  seq: number,
): Promise<boolean> {
  const entry = g.record.outbox?.find((e) => e.hash === hash);
  if (entry === undefined) return false;
  // The echo is read only once: from now on the entry must know its number (a re-read of the record
  // from disk, after another process wrote, may have brought it back without one).
  entry.seq = seq;
  // Written by this process: its flush takes the entry out.
  if (ctx.historyFlusher.wrote(hash)) return true;
  await writeLineIfMissing(ctx, g, entry, seq);
  g.record.outbox = g.record.outbox!.filter((e) => e !== entry);
  return true;
}

/**
 * An item of a group this device left (its state is gone, so it reads nothing there any more): the echo
 * of one of its own messages still settles that message's outbox entry, which a post whose answer was
 * lost just before leaving left behind.
 */
export async function settleEchoAfterLeaving(
  ctx: DeviceContext,
  g: GroupHandle,
  item: { sender: string; seq: number; message: string },
): Promise<void> {
  if (item.sender !== ctx.deviceId || (g.record.outbox?.length ?? 0) === 0) return;
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(item.message, LIMITS.mlsMessageBytes);
  } catch {
    return; // not one of ours: its hash would match nothing
  }
  if (await settleEcho(ctx, g, messageHash(bytes), item.seq)) await ctx.saveGroup(g);
}

/**
 * After every item of `hub` up to now was read: settles the outbox entries of its groups that no echo
 * settled (see the top of this file). Writes the records it changes.
 */
export async function settleOutbox(ctx: DeviceContext, hub: string): Promise<void> {
  for (const g of ctx.groups.values()) {
    const outbox = g.record.outbox;
    if (outbox === undefined || outbox.length === 0 || g.record.hub !== hub) continue;
    const keep: OutboxEntry[] = [];
    for (const entry of outbox) {
      if (ctx.historyFlusher.wrote(entry.hash)) keep.push(entry);
      else if (entry.seq !== undefined) await writeLineIfMissing(ctx, g, entry, entry.seq);
      else if (ctx.clock() - Date.parse(entry.at) < NOT_SENT_AFTER_MS) keep.push(entry);
      else {
        ctx.emit({
          type: "not_sent",
          groupId: g.record.groupId,
          activity: entry.activity,
          reason: "the hub never accepted it (the device stopped or lost the connection while posting it)",
        });
      }
    }
    if (keep.length === outbox.length) continue;
    g.record.outbox = keep;
    await ctx.saveGroup(g);
  }
}

async function writeLineIfMissing(
  ctx: DeviceContext,
  g: GroupHandle,
  entry: OutboxEntry,
  seq: number,
): Promise<void> {
  // A line found may have been written by a process that stopped before its flush: made durable here,
  // as the entry is about to go.
  const found = await ctx.store.historyTailEntry(g.record.groupId, seq);
  if (found !== undefined) {
    const same = found.content.kind === "activity" && found.content.activity.id === entry.activity.id;
    if (same) return ctx.store.flushHistory(g.record.groupId);
    // The hub numbered this message like another line of the history: nothing can be written under
    // that number (the history keeps one line per number), so the user is shown the message instead of
    // losing it without a word.
    const what =
      entry.activity.type === "Create" ? `"${entry.activity.object.content}"` : `a ${entry.activity.type}`;
    ctx.emit({
      type: "error",
      groupId: g.record.groupId,
      operation: "keeping a sent message in the history",
      message:
        `the hub numbered your message ${what} #${seq}, the number of another message of the history, ` +
        "so this copy cannot be kept there (the others received it)",
    });
    return;
  }
  await ctx.store.appendHistory(g.record.groupId, [ownHistoryEntry(ctx, seq, entry.at, entry.activity)]);
}
