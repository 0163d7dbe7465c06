import { ProtocolError, toBase64url, type InboxItem } from "@mastodon-mls/protocol";
import {
  ACCOUNT_STREAM,
  encodeCursor,
  groupNumberOf,
  membershipStream,
  stretchFromOf,
  type Cursor,
} from "./cursor.js";
import type { AckOutcome, DeliveryStore, LogEntry, StretchAck } from "./store/types.js";

// A device's inbox is a merge, in a fixed order, of its streams (cursor.ts): the account's invitations
// first, then each membership stretch in the order the device joined its groups. Within a stretch: the
// Welcome, the group's log after the adding commit, then the `removed` notice after the removing commit.
// The device's group index is read before anything else, so a group's messages never come out ahead of
// the Welcome that lets the device read them.
//
// Retention: what a device had not read when it was deleted becomes one `behind_retention` item at the
// position of the last deleted entry, and reading goes on after it. Invitations deleted unread are skipped.

/** The wire limit of an item's cursor (protocol InboxItem). */
export const ITEM_CURSOR_CHARS = 4096;
/** Log entries fetched per store call. */
const LOG_CHUNK = 50;

export interface InboxReader {
  device: string;
  /** The account whose invitations the device reads (deviceAccess.ts); undefined: none. */
  acct: string | undefined;
}

export interface InboxOptions {
  limit: number;
  /** A page stops before exceeding this many bytes of MLS data (it always holds at least one item). */
  maxBytes: number;
}

/** The device's last stretch in a group: where pushes for the group go. */
export interface GroupStream {
  key: string;
  open: boolean;
}

export interface InboxPage {
  items: InboxItem[];
  /** When each item was accepted (ms; 0 for items that are not log entries), for the lag metric. */
  acceptedAt: number[];
  cursor: Map<string, number>;
  more: boolean;
  /** Only when `more` is false: the position every stream was read to. */
  reached: Map<string, number>;
  /** groupId → the device's last stretch in it. */
  groups: Map<string, GroupStream>;
  /** Stream key → its groupId (the account stream: undefined). */
  streamGroups: Map<string, string | undefined>;
}

type ItemBody = InboxItem extends infer I ? (I extends unknown ? Omit<I, "cursor"> : never) : never;

interface Produced {
  pos: number;
  item: ItemBody;
  size: number;
  at: number;
}

interface Stream {
  key: string;
  groupId: string | undefined;
  /** The position before anything in the stream. */
  start: number;
  /** The last position the stream reaches right now. */
  end: number;
  /** Up to `max` of the stream's items after `pos`, in order. */
  read(pos: number, max: number): Promise<Produced[]>;
}

/** The inbox item of a log entry. */
export function logItem(groupId: string, e: LogEntry): ItemBody {
  if (e.fork) {
    return {
      kind: "forked",
      group_id: groupId,
      seq: e.seq,
      epoch: e.fork.epoch,
      commit_hash: e.fork.commitHash,
      commit_seq: e.fork.commitSeq,
      sender: e.fork.sender,
      reporter: e.fork.reporter,
      reason: e.fork.reason,
    };
  }
  return {
    kind: "message",
    group_id: groupId,
    seq: e.seq,
    epoch: e.epoch,
    sender: e.sender,
    message: e.text,
  };
}

/** The device's streams in inbox order, and its acknowledged positions. */
async function deviceStreams(store: DeliveryStore, reader: InboxReader) {
  const [groups, acked, invitationCount] = await Promise.all([
    store.deviceGroups(reader.device),
    store.cursor(reader.device),
    reader.acct === undefined ? 0 : store.invitationCount(reader.acct),
  ]);
  const ordered = [...groups.numbers].sort((a, b) => a[1] - b[1]);
  const found = await Promise.all(ordered.map(([id]) => store.memberships(id, reader.device)));
  const streams: Stream[] = [
    {
      key: ACCOUNT_STREAM,
      groupId: undefined,
      start: 0,
      end: invitationCount,
      read: async (pos, max) =>
        (reader.acct === undefined ? [] : await store.invitations(reader.acct, pos, max)).map(
          ({ seq, invitation }) => ({
            pos: seq,
            item: { kind: "invitation" as const, ...invitation },
            size: 256,
            at: 0,
          }),
        ),
    },
  ];
  const last = new Map<string, GroupStream>();
  const first = new Map<number, number>();
  // What an acknowledgement that stopped half-way left behind, finished here, before reading (a failure
  // leaves it for the next read; reading does not depend on it).
  const repairs: Promise<unknown>[] = [];
  ordered.forEach(([groupId, number], i) => {
    const inGroup = found[i];
    if (!inGroup) {
      // An entry whose commit never landed, or left by a forget that stopped half-way: it goes, unless an
      // add of the device is in flight, so that it takes no place in the device's budget for ever. Not
      // waited for (an entry kept by an add in flight is met by every read until the add ends).
      store.forgetDeviceGroup(reader.device, groupId).catch(() => undefined);
      return;
    }
    first.set(number, earliestFrom(inGroup.memberships));
    const read = inGroup.memberships[0];
    const position = read === undefined ? -1 : (acked.get(membershipStream(number, read.from)) ?? -1);
    if (read !== undefined && read.until !== null && position >= read.until + 1) {
      // The device acknowledged its `removed` and the group never heard (the acknowledgement stopped
      // between the device's slot and the group's): nothing more comes in this stretch, so the device
      // would never acknowledge it again, and the group would keep it, and its place, for ever.
      const acks = [{ from: read.from, position }];
      repairs.push(ackGroupAndForget(store, reader.device, groupId, number, acks).catch(() => undefined));
    }
    for (const m of inGroup.memberships) {
      const key = membershipStream(number, m.from);
      last.set(groupId, { key, open: m.until === null });
      const lastSeq = m.until ?? inGroup.seq;
      const behind = (pos: number): Produced => ({
        pos,
        item: { kind: "behind_retention", group_id: groupId, seq: pos },
        size: 0,
        at: 0,
      });
      streams.push({
        key,
        groupId,
        // The creator starts at 0; an added device just before its Welcome (at the adding commit's seq).
        start: m.from === 0 ? 0 : m.from - 1,
        end: m.until === null ? inGroup.seq : m.until + 1,
        read: async (pos, max) => {
          const out: Produced[] = [];
          let at = pos;
          if (m.from > 0 && at < m.from) {
            const welcome = inGroup.base >= m.from ? undefined : await store.welcome(groupId, m.from);
            if (welcome) {
              const text = toBase64url(welcome);
              out.push({
                pos: m.from,
                item: { kind: "welcome", group_id: groupId, seq: m.from, welcome: text },
                size: text.length,
                at: 0,
              });
              at = m.from;
            } else {
              // Deleted with the log up to base: nothing of this stretch before base can be read.
              at = Math.max(m.from, Math.min(inGroup.base, lastSeq));
              out.push(behind(at));
            }
          }
          const gone = Math.min(inGroup.base, lastSeq);
          if (at < gone && out.length < max) {
            at = gone;
            out.push(behind(at));
          }
          const first = at + 1;
          const room = max - out.length;
          const lastWanted = Math.min(lastSeq, first + Math.min(room, LOG_CHUNK) - 1);
          if (room > 0 && first <= lastWanted) {
            const entries = await store.readLog(groupId, first, lastWanted);
            // Entries are deleted from the front only: a gap, if any, is before the first one returned.
            const firstFound = entries[0]?.seq ?? lastWanted + 1;
            if (firstFound > first) out.push(behind(firstFound - 1));
            for (const e of entries) {
              if (out.length >= max) break;
              const item = logItem(groupId, e);
              out.push({ pos: e.seq, item, size: e.text.length, at: e.fork ? 0 : e.at });
            }
          }
          const reached = out.at(-1)?.pos ?? pos;
          if (m.until !== null && pos <= m.until && reached >= m.until && out.length < max) {
            out.push({
              pos: m.until + 1,
              item: { kind: "removed", group_id: groupId, seq: m.until },
              size: 0,
              at: 0,
            });
          }
          return out;
        },
      });
    }
  });
  await Promise.all(repairs);
  return { streams, acked, groups: last, next: groups.next, numbers: groups.numbers, first };
}

/**
 * Each group number's earliest stretch now (its `from`): the stretches of a number the group forgot all
 * began before it, since the group forgets only a device's first stretches (store ackGroup) or all of
 * them, and any later one begins with a later commit.
 */
type FirstStretches = ReadonlyMap<number, number>;

/** Where a device's earliest stretch in a group began (Infinity for none: every old stretch is forgotten). */
function earliestFrom(memberships: readonly { from: number }[]): number {
  return Math.min(...memberships.map((m) => m.from));
}

/**
 * A stream key the cursor may name although the device no longer has it: a group it has finished with (its
 * number no longer indexed, or indexed with nothing behind it), or a stretch of a number that the group
 * forgot before the device was added back (it began before the number's earliest stretch now).
 */
function forgotten(
  key: string,
  next: number,
  numbers: ReadonlyMap<string, number>,
  first: FirstStretches,
): boolean {
  const n = groupNumberOf(key);
  if (n === undefined || n < 1 || n > next) return false;
  for (const v of numbers.values()) {
    if (v !== n) continue;
    const earliest = first.get(n);
    return earliest === undefined || stretchFromOf(key) < earliest;
  }
  return true;
}

/**
 * One page of the device's inbox after `after` (streams it does not name: after their acknowledged
 * positions). Each item's cursor covers everything up to that item: ack it, or the page's cursor, once
 * those items are processed.
 */
export async function readInbox(
  store: DeliveryStore,
  reader: InboxReader,
  after: Cursor | undefined,
  opts: InboxOptions,
): Promise<InboxPage> {
  const { streams, acked, groups, next, numbers, first } = await deviceStreams(store, reader);
  const byKey = new Map(streams.map((s) => [s.key, s]));
  const named = new Map<string, number>();
  for (const [key, pos] of after ?? []) {
    const s = byKey.get(key);
    if (s) {
      // Reading would treat everything up to such a position as delivered, and its later items as read.
      if (pos > s.end) {
        throw new ProtocolError("invalid_cursor", "The cursor is not valid: it is ahead of the inbox.");
      }
      named.set(key, pos);
    } else if (!forgotten(key, next, numbers, first)) {
      throw new ProtocolError("invalid_cursor", "The cursor names a stream this device does not have.");
    }
  }
  // A position at or behind the acknowledged one need not travel: the store supplies it.
  const floor = (key: string) => Math.max(acked.get(key) ?? 0, byKey.get(key)?.start ?? 0);
  const prune = (positions: Iterable<[string, number]>): Map<string, number> =>
    new Map([...positions].filter(([key, pos]) => pos > floor(key)));
  const base = prune(named);
  const progress = new Map<string, number>();
  const reached = new Map<string, number>();
  const items: InboxItem[] = [];
  const acceptedAt: number[] = [];
  let bytes = 0;
  let more = false;

  outer: for (const s of streams) {
    let pos = Math.max(named.get(s.key) ?? acked.get(s.key) ?? s.start, s.start);
    while (pos < s.end) {
      const room = opts.limit - items.length;
      if (room <= 0) {
        more = true;
        break outer;
      }
      const batch = await s.read(pos, room);
      if (batch.length === 0) break;
      for (const next of batch) {
        if (items.length > 0 && bytes + next.size > opts.maxBytes) {
          more = true;
          break outer;
        }
        const before = progress.get(s.key);
        progress.set(s.key, next.pos);
        const cursor = itemCursor(base, progress, prune);
        if (cursor === undefined) {
          if (before === undefined) progress.delete(s.key);
          else progress.set(s.key, before);
          more = true;
          break outer;
        }
        items.push({ ...next.item, cursor });
        acceptedAt.push(next.at);
        bytes += next.size;
        pos = next.pos;
      }
    }
    reached.set(s.key, pos);
  }
  const streamGroups = new Map(streams.map((s) => [s.key, s.groupId]));
  return { items, acceptedAt, cursor: prune([...base, ...progress]), more, reached, groups, streamGroups };
}

/**
 * An item's cursor: everything so far, `after` included; or, when that would not fit the wire limit,
 * this page's progress alone (still safe to ack: it never passes an undelivered item).
 */
function itemCursor(
  base: Cursor,
  progress: Cursor,
  prune: (p: Iterable<[string, number]>) => Map<string, number>,
): string | undefined {
  const full = encodeCursor(prune([...base, ...progress]));
  if (full.length <= ITEM_CURSOR_CHARS) return full;
  const own = encodeCursor(prune(progress));
  return own.length <= ITEM_CURSOR_CHARS ? own : undefined;
}

export interface AckResult {
  /** Log entries retention deleted because of this acknowledgement. */
  trimmed: number;
  /**
   * The group forgot stretches of the device (it read them to their `removed`), and with the last of
   * them it may have dropped from the device's index. Its streams should read again: their streams
   * changed, and a commit may have added it back meanwhile (store forgetDeviceGroup).
   */
  forgot: boolean;
}

/**
 * Raises the device's acknowledged positions to the cursor's, then each group's record of them (which
 * drives retention). Refuses (invalid_cursor) a stream the device never had and a position beyond what
 * exists, which would silently skip future messages; ignores streams of groups the device has finished.
 */
export async function ackCursor(
  store: DeliveryStore,
  reader: InboxReader,
  cursor: Cursor,
  delivered?: DeliveredStreams,
): Promise<AckResult> {
  if (delivered && [...cursor].every(([key, pos]) => pos <= (delivered.reached.get(key) ?? -1))) {
    // Positions the stream read to itself, from the store or from its `after` once checkCursor passed it:
    // nothing to look up to know they are valid.
    await store.advanceCursor(reader.device, cursor);
    return ackGroups(store, reader, cursor, (key) => delivered.streamGroups.get(key));
  }
  const { valid, groupOf } = await validPositions(store, reader, cursor);
  await store.advanceCursor(reader.device, valid);
  return ackGroups(store, reader, valid, groupOf);
}

/**
 * The cursor's positions, less those of groups the device has finished with. invalid_cursor, as for an
 * acknowledgement, for a stream the device never had and for a position beyond what exists: a stream
 * started after such a position would take every item up to it for delivered, and acknowledge them.
 */
export async function checkCursor(
  store: DeliveryStore,
  reader: InboxReader,
  cursor: Cursor,
): Promise<Cursor> {
  return (await validPositions(store, reader, cursor)).valid;
}

async function validPositions(
  store: DeliveryStore,
  reader: InboxReader,
  cursor: Cursor,
): Promise<{ valid: Map<string, number>; groupOf: (key: string) => string | undefined }> {
  const invalid = (why: string) => new ProtocolError("invalid_cursor", `The cursor is not valid: ${why}.`);
  const groups = await store.deviceGroups(reader.device);
  const byNumber = new Map([...groups.numbers].map(([id, n]) => [n, id]));
  const ends = new Map<string, number>();
  const first = new Map<number, number>();
  const numbers = new Set([...cursor.keys()].map(groupNumberOf));
  // At once, not one group after the other: a stream's `after` may name every group of the device.
  await Promise.all(
    [...numbers].map(async (number) => {
      if (number === undefined) {
        ends.set(ACCOUNT_STREAM, reader.acct === undefined ? 0 : await store.invitationCount(reader.acct));
        return;
      }
      const groupId = byNumber.get(number);
      const inGroup = groupId === undefined ? undefined : await store.memberships(groupId, reader.device);
      if (!inGroup) return;
      first.set(number, earliestFrom(inGroup.memberships));
      for (const m of inGroup.memberships) {
        ends.set(membershipStream(number, m.from), m.until === null ? inGroup.seq : m.until + 1);
      }
    }),
  );
  const valid = new Map<string, number>();
  for (const [key, pos] of cursor) {
    const end = ends.get(key);
    if (end === undefined) {
      if (forgotten(key, groups.next, groups.numbers, first)) continue;
      throw invalid("it names a stream this device does not have");
    }
    if (pos > end) throw invalid("it is ahead of the inbox");
    valid.set(key, pos);
  }
  const groupOf = (key: string) => {
    const number = groupNumberOf(key);
    return number === undefined ? undefined : byNumber.get(number);
  };
  return { valid, groupOf };
}

/**
 * What a stream knows it handed out: positions it read each stream to (never past the inbox's end: a
 * stream's `after` passed checkCursor first), and the stream's group.
 */
export interface DeliveredStreams {
  reached: ReadonlyMap<string, number>;
  streamGroups: ReadonlyMap<string, string | undefined>;
}

/** Each group's record of the acknowledged positions of its stretches (stream "<n>.<f>": stretch from f). */
async function ackGroups(
  store: DeliveryStore,
  reader: InboxReader,
  valid: Cursor,
  groupOf: (key: string) => string | undefined,
): Promise<AckResult> {
  const perGroup = new Map<string, { number: number; acks: StretchAck[] }>();
  for (const [key, position] of valid) {
    const groupId = groupOf(key);
    const number = groupNumberOf(key);
    if (groupId === undefined || number === undefined) continue;
    const group = perGroup.get(groupId) ?? { number, acks: [] };
    group.acks.push({ from: stretchFromOf(key), position });
    perGroup.set(groupId, group);
  }
  let trimmed = 0;
  let forgot = false;
  await Promise.all(
    [...perGroup].map(async ([groupId, { number, acks }]) => {
      const outcome = await ackGroupAndForget(store, reader.device, groupId, number, acks);
      trimmed += outcome.trimmed;
      forgot ||= outcome.forgotten.length > 0;
    }),
  );
  return { trimmed, forgot };
}

/**
 * The group's record of the device's positions, then what goes with stretches the group forgot: the
 * device's positions in them (no stream of that name comes again) and, once it forgot them all, the
 * group's entry in the device's index (settled: store forgetDeviceGroup).
 */
async function ackGroupAndForget(
  store: DeliveryStore,
  device: string,
  groupId: string,
  number: number,
  acks: readonly StretchAck[],
): Promise<AckOutcome> {
  const outcome = await store.ackGroup(groupId, device, acks);
  // Positions first: a retry after a failure here names them again, and they are returned again.
  await dropForgottenStretches(store, device, number, outcome.forgotten);
  if (outcome.done) await store.forgetDeviceGroup(device, groupId);
  return outcome;
}

/**
 * Deletes the device's cursor positions in the stretches (by `from`) that the group numbered `number`
 * forgot: no stream of those names comes again.
 */
export async function dropForgottenStretches(
  store: DeliveryStore,
  device: string,
  number: number,
  forgotten: readonly number[],
): Promise<void> {
  await store.dropCursorStreams(
    device,
    forgotten.map((from) => membershipStream(number, from)),
  );
}
