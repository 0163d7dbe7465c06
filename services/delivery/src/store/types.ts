// The delivery store: everything the hub keeps. Two implementations share one contract test suite:
// MemoryDeliveryStore (the embedded default) and RedisDeliveryStore. Every method that changes a group is
// one atomic step over that group's data only, so each lands in one Redis Cluster hash slot.

/** A device at a leaf of a group's tree, as the hub knows it. */
export interface MemberRecord {
  /** base64url SHA-256 of the device's signature key. */
  device: string;
  /** `user@domain` from the device certificate. */
  acct: string;
}

/** A proposal accepted in the current epoch, kept so that a commit can name it by reference. */
export interface StoredProposal {
  /** The MLSMessage (PublicMessage) as submitted. */
  message: Uint8Array;
  senderLeaf: number;
}

export interface GroupSnapshot {
  groupId: string;
  epoch: number;
  /** The sequence number of the last accepted message (0: none yet). */
  seq: number;
  /** leaf index → member; a leaf not in the map is blank. */
  roster: ReadonlyMap<number, MemberRecord>;
  /** base64url ProposalRef → proposal, for the current epoch only. */
  proposals: ReadonlyMap<string, StoredProposal>;
}

export interface LogEntry {
  seq: number;
  /** The epoch the message was sent in (for a commit: the epoch it ends). */
  epoch: number;
  /** Device id of the submitting device. */
  sender: string;
  /** Milliseconds since the Unix epoch, when accepted. */
  at: number;
  message: Uint8Array;
}

export interface NewGroup {
  groupId: string;
  creator: MemberRecord;
  at: number;
}

/** One accepted commit: the epoch compare-and-set and everything that goes with it, in one step. */
export interface CommitWrite {
  /** The epoch the commit was screened against; the commit ends it. */
  expectedEpoch: number;
  sender: string;
  message: Uint8Array;
  /** base64url SHA-256 of `message`, reported to losers of the epoch. */
  hash: string;
  at: number;
  /** Leaves blanked. */
  removes: readonly number[];
  /** Devices placed, each at the leaf MLS puts it in. */
  adds: readonly { leaf: number; member: MemberRecord }[];
  /** The Welcome (an MLSMessage) for the added devices; required when there are adds. */
  welcome: Uint8Array | undefined;
}

export type CommitOutcome =
  | { ok: true; seq: number; epoch: number }
  | { ok: false; reason: "wrong_epoch"; epoch: number; winner: string | null }
  | { ok: false; reason: "unknown_group" };

/** A proposal or an application message. */
export interface AppendWrite {
  kind: "proposal" | "application";
  /** The message's own epoch. */
  epoch: number;
  sender: string;
  /** The sender's leaf: the append is refused if the device no longer sits there. */
  leaf: number;
  message: Uint8Array;
  at: number;
  /** base64url ProposalRef, for a proposal. */
  ref?: string;
  /** Past epochs still accepted for an application message. */
  window: number;
}

export type AppendOutcome =
  | { ok: true; seq: number; epoch: number }
  | { ok: false; reason: "wrong_epoch"; epoch: number; winner: string | null }
  | { ok: false; reason: "stale_epoch"; epoch: number }
  | { ok: false; reason: "not_a_member" | "unknown_group" | "duplicate_proposal" };

/**
 * One stretch of a device's membership in a group: it reads the group's log after `from` (the seq of
 * the commit that added it; 0 for the creator) up to and including `until` (the commit that removed it).
 */
export interface Membership {
  from: number;
  until: number | null;
}

export interface DeviceInGroup {
  /** The group's current sequence number, read atomically with the memberships. */
  seq: number;
  memberships: Membership[];
}

export interface Invitation {
  from: string;
  from_device: string;
  hub: string;
  group_id: string;
}

export interface DeliveryStore {
  /** False when a group with this id exists. */
  createGroup(group: NewGroup): Promise<boolean>;
  loadGroup(groupId: string): Promise<GroupSnapshot | undefined>;
  commit(groupId: string, write: CommitWrite): Promise<CommitOutcome>;
  append(groupId: string, write: AppendWrite): Promise<AppendOutcome>;
  /** base64url SHA-256 of the commit that ended `epoch`, if one did. */
  winningCommit(groupId: string, epoch: number): Promise<string | null>;

  /**
   * Notes that a device may be a member of these groups (a hint, written before the commit that adds it,
   * so a crash between the two loses nothing); the group's own memberships decide. Idempotent.
   */
  indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void>;
  /** groupId → a small number, unique per device, that names the group in the device's cursors. */
  deviceGroups(device: string): Promise<ReadonlyMap<string, number>>;
  memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined>;
  /** Log entries with `from <= seq <= to`, in order. */
  readLog(groupId: string, from: number, to: number): Promise<LogEntry[]>;
  welcome(groupId: string, seq: number): Promise<Uint8Array | undefined>;

  /** The device's acknowledged positions, by cursor stream key. */
  cursor(device: string): Promise<ReadonlyMap<string, number>>;
  /** Raises each named position to the given value; never lowers one. */
  advanceCursor(device: string, positions: ReadonlyMap<string, number>): Promise<void>;

  /** Queues an invitation for every device of `acct`; returns its sequence number. */
  queueInvitation(acct: string, invitation: Invitation): Promise<number>;
  /** The seq of the last invitation queued for `acct` (0: none). */
  invitationCount(acct: string): Promise<number>;
  /** Up to `max` invitations with seq > `after`, in order. */
  invitations(acct: string, after: number, max: number): Promise<{ seq: number; invitation: Invitation }[]>;

  ready(): Promise<boolean>;
  close(): Promise<void>;
}
