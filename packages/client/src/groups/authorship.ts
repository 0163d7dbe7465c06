import type { Activity } from "@mastodon-mls/protocol";
import type { HistoryEntry } from "../store/schemas.js";

/**
 * TXT-5 (docs/protocol.md §7): an Update or Delete of a note is only its author's to make, and an Undo only
 * the undone activity's author's. Checked against the history this device holds; a target it never saw
 * cannot be checked and is let through (attribution to the sender is still enforced by TXT-3).
 * Returns a reason when the rule is broken.
 */
export function checkTargetAuthor(
  activity: Activity,
  sender: string,
  history: readonly HistoryEntry[],
): string | undefined {
  if (activity.type !== "Update" && activity.type !== "Delete" && activity.type !== "Undo") return undefined;
  const target = activity.type === "Update" ? activity.object.id : activity.object;
  for (const entry of history) {
    if (entry.content.kind !== "activity") continue;
    const known = entry.content.activity;
    const matches =
      activity.type === "Undo" ? known.id === target : known.type === "Create" && known.object.id === target;
    if (matches && entry.from !== sender) {
      return `only ${entry.from} may ${activity.type.toLowerCase()} ${activity.type === "Undo" ? "that activity" : "that note"}`;
    }
  }
  return undefined;
}
