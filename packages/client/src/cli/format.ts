import type { HistoryItem, Member } from "../client.js";
import type { DmEvent } from "../events.js";
import { unprovenSender, who } from "../groups/forks.js";
import { safeText } from "./io.js";

// Readable output. Everything that came from another person passes through safeText (no terminal
// escape sequences); group ids are shown in full (commands accept any unique prefix).

export function short(groupId: string): string {
  return groupId.slice(0, 8);
}

function time(at: Date = new Date()): string {
  return at.toISOString().slice(11, 19);
}

/** One line per event (more for a text of several lines), or undefined for events not worth a line. */
export function formatEvent(e: DmEvent, now = new Date()): string | undefined {
  const line = describeEvent(e, now);
  return line === undefined ? undefined : safeText(line);
}

function describeEvent(e: DmEvent, now: Date): string | undefined {
  const g = "groupId" in e && e.groupId !== undefined ? `[${short(e.groupId)}] ` : "";
  const t = time(now);
  switch (e.type) {
    case "message":
      return `${t} ${g}${e.from}: ${safeText(e.note.content)}`;
    case "activity":
      return `${t} ${g}${e.from} sent a ${e.activity.type}`;
    case "unsupported":
      return `${t} ${g}${e.from} sent something this version cannot show (${safeText(e.activityType)})`;
    case "refused":
      return `${t} ${g}refused a message from ${e.from}: ${safeText(e.reason)}`;
    case "undecryptable":
      return `${t} ${g}could not read message #${e.seq}: ${safeText(e.reason)}`;
    case "joined":
      return e.replaces === undefined
        ? `${t} ${g}you joined group ${e.groupId}`
        : `${t} ${g}you joined group ${e.groupId}, which re-creates group ${e.replaces}`;
    case "declined":
      return `${t} ${g}declined group ${e.groupId}: ${e.blocked.join(", ")} ${e.blocked.length === 1 ? "is" : "are"} in it, blocked (after mls-dm unblock, their new groups are joined)`;
    case "invitation":
      // `from` is the hub's word (checked by it for accounts of its own instance only): the hub is named.
      return `${t} ${g}${e.from} invited you to group ${e.groupId} (at ${e.hub})`;
    case "member_added":
      return e.blocked === undefined
        ? `${t} ${g}added: ${e.accts.join(", ")}`
        : `${t} ${g}added: ${e.accts.join(", ")} — WARNING: you blocked ${e.blocked.join(", ")}; to leave: mls-dm leave ${short(e.groupId)}`;
    case "member_removed":
      return `${t} ${g}left or removed: ${e.accts.join(", ")}`;
    case "member_leaving":
      return `${t} ${g}${e.acct} is leaving`;
    case "removed_from_group":
      return `${t} ${g}you are no longer in group ${e.groupId}`;
    case "invalid_member":
      return `${t} ${g}WARNING: a device of ${e.acct} has an invalid certificate (${safeText(e.reason)})`;
    case "status_changed":
      return e.status === "verified" && e.previous === "unverified"
        ? undefined
        : `${t} ${g}${e.status === "key-changed" || e.status === "invalid" ? "WARNING: " : ""}${e.acct} is now ${e.status} (was ${e.previous}): ${safeText(e.reason)}`;
    case "group_forked": {
      const hubSays = unprovenSender(e);
      if (hubSays !== undefined) {
        return e.stuck
          ? `${t} ${g}WARNING: this device could not process the commit that ended epoch ${e.epoch} ` +
              `(${safeText(e.reason)}): it cannot read or send in this group any more; ${hubSays}. The ` +
              `hub was told. To re-create the group: mls-dm recreate ${short(e.groupId)} (they stay in it ` +
              `unless you name them with --without)`
          : `${t} ${g}WARNING: the group has forked: ${who(e.reporter)} could not process the commit that ` +
              `ended epoch ${e.epoch} (${safeText(e.reason)}); ${hubSays}. You can go on here; to ` +
              `re-create the group: mls-dm recreate ${short(e.groupId)} (they stay in it unless you name ` +
              `them with --without)`;
      }
      const sender = e.stuck ? who(e.sender) : `${who(e.sender)}'s`;
      return e.stuck
        ? `${t} ${g}WARNING: this device could not process the commit of ${sender} that ended epoch ` +
            `${e.epoch} (${safeText(e.reason)}): it cannot read or send in this group any more. The hub ` +
            `was told. Re-create the group without them: mls-dm recreate ${short(e.groupId)}`
        : `${t} ${g}WARNING: the group has forked: ${who(e.reporter)} could not process ${sender} commit ` +
            `that ended epoch ${e.epoch} (${safeText(e.reason)}). You can go on here; to continue without ` +
            `${who(e.sender)}: mls-dm recreate ${short(e.groupId)}`;
    }
    case "behind_retention":
      return (
        `${t} ${g}WARNING: the hub deleted messages up to #${e.seq} before this device read them, so it ` +
        `cannot catch up in group ${e.groupId}. Ask a member to remove and re-add this device.`
      );
    case "not_sent": {
      // Our own text, but shown like any other content: it may hold what a terminal would act on.
      const what =
        e.activity.type === "Create" ? `"${safeText(e.activity.object.content)}"` : `a ${e.activity.type}`;
      return `${t} ${g}WARNING: your message ${what} was NOT sent (${safeText(e.reason)}); send it again.`;
    }
    case "error":
      return `${t} ${g}problem: ${e.operation}: ${safeText(e.message)}`;
  }
}

/** A line of a group's history; `self`, this device's account, marks what its other devices sent too. */
export function formatHistory(h: HistoryItem, self?: string): string {
  return safeText(describeHistory(h, self));
}

function describeHistory(h: HistoryItem, self: string | undefined): string {
  const when = h.at.replace("T", " ").slice(0, 19);
  if (h.content.kind === "unsupported") {
    return `${when} ${h.from}: (unsupported: ${safeText(h.content.type)})`;
  }
  const a = h.content.activity;
  const who = h.own ? " (you)" : h.from === self ? " (you, another device)" : "";
  if (a.type === "Create") return `${when} ${h.from}${who}: ${safeText(a.object.content)}`;
  return `${when} ${h.from}: (${a.type})`;
}

export function formatMember(m: Member, widths = { acct: 0, status: 0 }): string {
  return `${m.acct.padEnd(widths.acct)}  device ${m.deviceId.slice(0, 12)}  ${m.status.padEnd(widths.status)}${
    m.self ? "  (this device)" : ""
  }${m.leaving ? "  (leaving)" : ""}${m.reason !== undefined ? `  ${safeText(m.reason)}` : ""}`.trimEnd();
}

/** A group's members, one line each, their columns lined up (accounts and statuses differ in length). */
export function formatMembers(members: Member[]): string[] {
  const widths = {
    acct: Math.max(0, ...members.map((m) => m.acct.length)),
    status: Math.max(0, ...members.map((m) => m.status.length)),
  };
  return members.map((m) => formatMember(m, widths));
}
