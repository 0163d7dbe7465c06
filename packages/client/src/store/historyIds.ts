import type { HistoryEntry } from "./schemas.js";

// The ids of a group's history and who used each first: what TXT-5 and TXT-6 (docs/protocol.md §7) are
// checked against when a message arrives (groups/authorship.ts), kept up to date by
// DeviceStore.historyIdAuthors.

/** Who first used each note id and activity id in a group's history (acct of the sender). */
export interface IdAuthors {
  notes: Map<string, string>;
  activities: Map<string, string>;
}

export function emptyIdAuthors(): IdAuthors {
  return { notes: new Map(), activities: new Map() };
}

/** Records the ids of one history entry in `into`; the first author of an id keeps it. */
export function noteIdAuthors(into: IdAuthors, entry: HistoryEntry): void {
  if (entry.content.kind !== "activity") return;
  const activity = entry.content.activity;
  if (!into.activities.has(activity.id)) into.activities.set(activity.id, entry.from);
  if (activity.type === "Create" && !into.notes.has(activity.object.id)) {
    into.notes.set(activity.object.id, entry.from);
  }
}

export function idAuthorsOf(history: readonly HistoryEntry[]): IdAuthors {
  const out = emptyIdAuthors();
  for (const entry of history) noteIdAuthors(out, entry);
  return out;
}
