import { ProtocolError, toBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { ACCOUNT_STREAM, encodeCursor, groupNumberOf, membershipStream, type Cursor } from "./cursor.js";
import type { DeliveryStore } from "./store/types.js";

// A device's inbox is a merge, in a fixed order, of its streams (cursor.ts): the account's invitations
// first, then each membership stretch in the order the device joined its groups. Within a stretch: the
// Welcome, the group's log after the adding commit, then the `removed` notice after the removing commit.
// The device's group index is read before anything else, so a group's messages never come out ahead of
// the Welcome that lets the device read them.

/** The wire limit of an item's cursor (protocol InboxItem). */
const ITEM_CURSOR_CHARS = 4096;
/** Log entries fetched per store call. */
const LOG_CHUNK = 50;

export interface InboxReader {
  device: string;
  acct: string;
}

export interface InboxOptions {
  limit: number;
  /** A page stops before exceeding this many bytes of MLS data (it always holds at least one item). */
  maxBytes: number;
}

export interface InboxPage {
  items: InboxItem[];
  cursor: Cursor;
  more: boolean;
}

type ItemBody = InboxItem extends infer I ? (I extends unknown ? Omit<I, "cursor"> : never) : never;

interface Produced {
  pos: number;
  item: ItemBody;
  size: number;
}

interface Stream {
  key: string;
  /** The position before anything in the stream. */
  start: number;
  /** The last position the stream reaches right now. */
  end: number;
  /** Up to `max` of the stream's items after `pos`, in order. */
  read(pos: number, max: number): Promise<Produced[]>;
}

/** The device's streams in inbox order, and its acknowledged positions. */
async function deviceStreams(store: DeliveryStore, reader: InboxReader) {
  const [groups, acked, invitationCount] = await Promise.all([
    store.deviceGroups(reader.device),
    store.cursor(reader.device),
    store.invitationCount(reader.acct),
  ]);
  const ordered = [...groups].sort((a, b) => a[1] - b[1]);
  const found = await Promise.all(ordered.map(([id]) => store.memberships(id, reader.device)));
  const streams: Stream[] = [
    {
      key: ACCOUNT_STREAM,
      start: 0,
      end: invitationCount,
      read: async (pos, max) =>
        (await store.invitations(reader.acct, pos, max)).map(({ seq, invitation }) => ({
          pos: seq,
          item: { kind: "invitation" as const, ...invitation },
          size: 256,
        })),
    },
  ];
  ordered.forEach(([groupId, number], i) => {
    const inGroup = found[i];
    if (!inGroup) return; // an index hint whose commit never landed
    inGroup.memberships.forEach((m, k) => {
      const lastSeq = m.until ?? inGroup.seq;
      streams.push({
        key: membershipStream(number, k),
        // The creator starts at 0; an added device just before its Welcome (at the adding commit's seq).
        start: m.from === 0 ? 0 : m.from - 1,
        end: m.until === null ? inGroup.seq : m.until + 1,
        read: async (pos, max) => {
          const out: Produced[] = [];
          if (m.from > 0 && pos < m.from) {
            const welcome = await store.welcome(groupId, m.from);
            const text = welcome ? toBase64url(welcome) : "";
            out.push({
              pos: m.from,
              item: { kind: "welcome", group_id: groupId, seq: m.from, welcome: text },
              size: text.length,
            });
          }
          const first = Math.max(pos, m.from) + 1;
          const last = Math.min(lastSeq, first + Math.min(max - out.length, LOG_CHUNK) - 1);
          if (first <= last) {
            for (const e of await store.readLog(groupId, first, last)) {
              const text = toBase64url(e.message);
              out.push({
                pos: e.seq,
                item: {
                  kind: "message",
                  group_id: groupId,
                  seq: e.seq,
                  epoch: e.epoch,
                  sender: e.sender,
                  message: text,
                },
                size: text.length,
              });
            }
          }
          const reached = out.at(-1)?.pos ?? pos;
          if (m.until !== null && pos <= m.until && reached >= m.until && out.length < max) {
            out.push({
              pos: m.until + 1,
              item: { kind: "removed", group_id: groupId, seq: m.until },
              size: 0,
            });
          }
          return out;
        },
      });
    });
  });
  return { streams, acked };
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
  const { streams, acked } = await deviceStreams(store, reader);
  const byKey = new Map(streams.map((s) => [s.key, s]));
  for (const key of after?.keys() ?? []) {
    if (!byKey.has(key)) {
      throw new ProtocolError("invalid_cursor", "The cursor names a stream this device does not have.");
    }
  }
  // A position at or behind the acknowledged one need not travel: the store supplies it.
  const floor = (key: string) => Math.max(acked.get(key) ?? 0, byKey.get(key)?.start ?? 0);
  const prune = (positions: Iterable<[string, number]>): Map<string, number> =>
    new Map([...positions].filter(([key, pos]) => pos > floor(key)));
  const base = prune(after ?? []);
  const progress = new Map<string, number>();
  const items: InboxItem[] = [];
  let bytes = 0;
  let more = false;

  outer: for (const s of streams) {
    let pos = Math.max(after?.get(s.key) ?? acked.get(s.key) ?? s.start, s.start);
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
        bytes += next.size;
        pos = next.pos;
      }
    }
  }
  return { items, cursor: prune([...base, ...progress]), more };
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

/**
 * Raises the device's acknowledged positions to the cursor's. Refuses (invalid_cursor) a stream the device
 * does not have and a position beyond what exists, which would silently skip future messages.
 */
export async function ackCursor(store: DeliveryStore, reader: InboxReader, cursor: Cursor): Promise<void> {
  const invalid = (why: string) => new ProtocolError("invalid_cursor", `The cursor is not valid: ${why}.`);
  const groups = await store.deviceGroups(reader.device);
  const byNumber = new Map([...groups].map(([id, n]) => [n, id]));
  const ends = new Map<string, number>();
  const numbers = new Set([...cursor.keys()].map(groupNumberOf));
  for (const number of numbers) {
    if (number === undefined) {
      ends.set(ACCOUNT_STREAM, await store.invitationCount(reader.acct));
      continue;
    }
    const groupId = byNumber.get(number);
    const inGroup = groupId === undefined ? undefined : await store.memberships(groupId, reader.device);
    inGroup?.memberships.forEach((m, k) =>
      ends.set(membershipStream(number, k), m.until === null ? inGroup.seq : m.until + 1),
    );
  }
  for (const [key, pos] of cursor) {
    const end = ends.get(key);
    if (end === undefined) throw invalid("it names a stream this device does not have");
    if (pos > end) throw invalid("it is ahead of the inbox");
  }
  await store.advanceCursor(reader.device, cursor);
}
