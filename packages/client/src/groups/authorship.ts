import type { Activity } from "@mastodon-mls/protocol";
import type { IdAuthors } from "../store/historyIds.js";

/**
 * TXT-6 (docs/protocol.md §7): a note id, and an activity id, belong to whoever used it first in the
 * group; a later activity of another member reusing one is refused. Otherwise a member copying the id of
 * someone's note would keep its author from editing or deleting it (TXT-5 would find the copy), or make
 * other clients apply the copier's Delete to the original. Returns a reason when the rule is broken.
 */
export function checkIdOwnership(activity: Activity, sender: string, known: IdAuthors): string | undefined {
  const activityOwner = known.activities.get(activity.id);
  if (activityOwner !== undefined && activityOwner !== sender) {
    return `its activity id is already ${activityOwner}'s (ids are unique within the group)`;
  }
  if (activity.type === "Create") {
    const noteOwner = known.notes.get(activity.object.id);
    if (noteOwner !== undefined && noteOwner !== sender) {
      return `its note id is already ${noteOwner}'s (ids are unique within the group)`;
    }
  }
  return undefined;
}

/**
 * TXT-5 (docs/protocol.md §7): an Update or Delete of a note is only its author's to make, and an Undo only
 * the undone activity's author's. Checked against the history this device holds; a target it never saw
 * cannot be checked and is let through (attribution to the sender is still enforced by TXT-3).
 * Returns a reason when the rule is broken.
 */
export function checkTargetAuthor(activity: Activity, sender: string, known: IdAuthors): string | undefined {
  if (activity.type !== "Update" && activity.type !== "Delete" && activity.type !== "Undo") return undefined;
  const target = activity.type === "Update" ? activity.object.id : activity.object;
  const author = activity.type === "Undo" ? known.activities.get(target) : known.notes.get(target);
  if (author === undefined || author === sender) return undefined;
  return `only ${author} may ${activity.type.toLowerCase()} ${activity.type === "Undo" ? "that activity" : "that note"}`;
}
