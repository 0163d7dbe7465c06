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
  | { type: "joined"; groupId: string; hub: string }
  | { type: "member_added"; groupId: string; accts: string[] }
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
  /** Something the device does on its own (self-update after joining, invitations, KeyPackages) failed; retried later. */
  | { type: "error"; groupId?: string; operation: string; message: string };

export type DmEventType = DmEvent["type"];
