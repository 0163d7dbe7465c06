import type { GroupEvent } from "../notifier.js";

/** Log entries up to this size (base64url characters) travel with their event; larger ones are read. */
export const EVENT_MESSAGE_CHARS = 64 * 1024;

export interface EntryFields {
  epoch: number;
  sender: string;
  at: number;
  text: string;
}

/** The event announcing a new log entry. */
export function groupEvent(
  groupId: string,
  seq: number,
  f: EntryFields,
  changed: readonly string[] = [],
): GroupEvent {
  return {
    kind: "group",
    groupId,
    seq,
    epoch: f.epoch,
    sender: f.sender,
    at: f.at,
    ...(f.text.length <= EVENT_MESSAGE_CHARS ? { message: f.text } : {}),
    ...(changed.length > 0 ? { changed } : {}),
  };
}

/**
 * An event as JSON around its seq, which only the store step knows: `head + seq + tail`. Lets the
 * Redis scripts publish the event in the same atomic step that appends the entry.
 */
export function eventTemplate(e: GroupEvent): [head: string, tail: string] {
  const { seq: _seq, ...rest } = e;
  return ['{"seq":', `,${JSON.stringify(rest).slice(1)}`];
}
