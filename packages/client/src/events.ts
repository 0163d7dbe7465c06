import type { Activity, MemberStatusName, Note } from "@mastodon-mls/protocol";

// What `sync()` returns and `events()` yields. Both come from the same processing, so they carry the
// same events. Accounts are `user@domain`; group ids base64url; `seq` is the hub's sequence number.

export type DmEvent =
  /** A `Create` of a `Note`: the ordinary message. */
  | {
      type: "message";
      groupId: string;
      from: string;
      deviceId: string;
      note: Note;
      activityId: string;
      seq: number;
    }
  /** Any other known activity (Update, Delete, Like, Read, Undo), already checked against its sender. */
  | { type: "activity"; groupId: string; from: string; deviceId: string; activity: Activity; seq: number }
  /** A well-formed message of a type or version this client does not know: shown, never dropped. */
  | {
      type: "unsupported";
      groupId: string;
      from: string;
      deviceId: string;
      activityType: string;
      seq: number;
    }
  /** Decrypted, but it breaks a sender rule (e.g. attributedTo is not the MLS sender): not stored. */
  | { type: "refused"; groupId: string; from: string; seq: number; reason: string }
  | { type: "undecryptable"; groupId: string; seq: number; reason: string }
  /** `replaces`: the group this one re-creates, as one of its members said (D21). */
  | { type: "joined"; groupId: string; hub: string; replaces?: string }
  /** A Welcome to a group with blocked accounts in it: joined only to be left at once (D17). */
  | { type: "declined"; groupId: string; hub: string; blocked: string[] }
  /** `blocked`: those of them this device blocks (it stays: leaving is the user's call). */
  | { type: "member_added"; groupId: string; accts: string[]; blocked?: string[] }
  | { type: "member_removed"; groupId: string; accts: string[] }
  | { type: "removed_from_group"; groupId: string }
  /** A member proposed its own Remove (`leave`); a member commits it shortly (DESIGN §9). */
  | { type: "member_leaving"; groupId: string; acct: string; deviceId: string }
  | { type: "invalid_member"; groupId: string; acct: string; deviceId: string; reason: string }
  | { type: "invitation"; groupId: string; hub: string; from: string }
  /**
   * A member account's verification status (docs/identity.md §6) changed, or was first established, in a
   * group. `previous` is "unverified" the first time. A network failure gives `unreachable`, never a
   * mismatch.
   */
  | {
      type: "status_changed";
      groupId: string;
      acct: string;
      status: MemberStatusName;
      previous: MemberStatusName | "unverified";
      reason: string;
    }
  /**
   * A member could not process the accepted commit that ended `epoch` (DESIGN §6 forks, docs/decisions.md
   * D10): either this device (`stuck`: it cannot follow the group any more and has reported it to the hub)
   * or another member (the hub's `forked` notice). Once per fork. `recreateGroup` offers a way on without
   * the sender. Accts are null when the device is not in this device's view of the group.
   * `senderProven` false: the sender is only the hub's word (docs/protocol.md "Forks"): the commit's
   * signature did not verify under its key, or this device did not take that commit; a UI must say so,
   * and `recreateGroup` keeps that account by default.
   */
  | {
      type: "group_forked";
      groupId: string;
      epoch: number;
      commitSeq: number;
      sender: ForkParty;
      senderProven: boolean;
      reporter: ForkParty;
      reason: string;
      stuck: boolean;
    }
  /**
   * The hub deleted messages of the group up to `seq` before this device read them: it cannot catch up
   * and must be removed and re-added by a member. Also for a group whose Welcome was deleted unread.
   */
  | { type: "behind_retention"; groupId: string; seq: number }
  /**
   * A message this device encrypted and began to post was never accepted by the hub (the device stopped
   * or lost the connection while posting it); nobody received it. Its activity is here to be sent again.
   */
  | { type: "not_sent"; groupId: string; activity: Activity; reason: string }
  /** Something the device does on its own (self-update after joining, invitations, KeyPackages) failed; retried later. */
  | { type: "error"; groupId?: string; operation: string; message: string };

export type DmEventType = DmEvent["type"];

/** A device named by a fork notice, with its account when known. */
export interface ForkParty {
  acct: string | null;
  deviceId: string;
}
