// The delivery store: everything the hub keeps. Two implementations share one contract test suite:
// MemoryDeliveryStore (the embedded default) and RedisDeliveryStore. Every method that changes a group is
// one atomic step over that group's data only, so each lands in one Redis Cluster hash slot.

import type { GroupEvent } from "../notifier.js";

/** A device at a leaf of a group's tree, as the hub knows it. */
export interface MemberRecord {
  /** base64url SHA-256 of the device's signature key. */
  device: string;
  /** `user@domain` from the device certificate. */
  acct: string;
  /**
   * The device left the group at the hub (DeliveryStore.depart): its leaf is not blank in the tree until
   * a member's commit removes it, but the device is no member of the hub's any more.
   */
  departed?: true | undefined;
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

/** A fork: a member reported that it cannot process the accepted commit that ended `epoch`. */
export interface ForkRecord {
  /** The seq of the fork notice in the group's log. */
  seq: number;
  epoch: number;
  commitHash: string;
  commitSeq: number;
  /** The device that sent the rejected commit. */
  sender: string;
  reporter: string;
  reason: string;
}

export interface LogEntry {
  seq: number;
  /** The epoch the message was sent in (for a commit: the epoch it ends; for a fork notice: the group's). */
  epoch: number;
  /** Device id of the submitting (or reporting) device. */
  sender: string;
  /** Milliseconds since the Unix epoch, when accepted. */
  at: number;
  /** The MLSMessage (decoded from `text` when read); empty for a fork notice. */
  readonly message: Uint8Array;
  /** The MLSMessage, base64url, as stored; empty for a fork notice. */
  text: string;
  /** Set on a fork notice (not an MLS message). */
  fork?: ForkRecord;
}

/**
 * The winners of this many latest epochs are kept even once their commits left the log; older ones go
 * with their commits (store/lua.ts). The service passes APP_EPOCH_WINDOW + 1.
 */
export const DEFAULT_WINNER_EPOCHS = 3;

/**
 * At most this many fork records are kept per group (the newest epochs'), so that a member reporting every
 * commit cannot grow the record list, and GET /v1/groups/:id with it, without bound. A report is taken for
 * any epoch whose winner is still known (a device that was offline for many commits may report late); a
 * new record beyond the bound evicts the record of the oldest other epoch. Each still goes with its winner.
 */
export const FORK_RECORDS = 64;

/** A log entry whose `message` bytes are decoded from `text` only if asked for. */
export function logEntry(fields: Omit<LogEntry, "message">): LogEntry {
  return {
    ...fields,
    get message() {
      const bytes = Buffer.from(this.text, "base64url");
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
  };
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
  /**
   * The leaf the sender sat at in the snapshot screened: the commit is refused (not_a_member) if the
   * device no longer sits there (it departed meanwhile: a departure does not move the epoch).
   */
  senderLeaf: number;
  message: Uint8Array;
  /** base64url of `message`, when the caller already has it. */
  text?: string | undefined;
  /** base64url SHA-256 of `message`, reported to losers of the epoch. */
  hash: string;
  at: number;
  /** Leaves blanked. */
  removes: readonly number[];
  /** The devices at those leaves (from the snapshot the commit was screened against), to tell them. */
  removedDevices?: readonly string[] | undefined;
  /** Devices placed, each at the leaf MLS puts it in. */
  adds: readonly { leaf: number; member: MemberRecord }[];
  /** The Welcome (an MLSMessage) for the added devices; required when there are adds. */
  welcome: Uint8Array | undefined;
}

/** What an accepted write tells the replicas; `announced` when the store already published it. */
export interface Accepted {
  ok: true;
  seq: number;
  epoch: number;
  event: GroupEvent;
  announced: boolean;
}

export type CommitOutcome =
  | Accepted
  | { ok: false; reason: "wrong_epoch"; epoch: number; winner: string | null }
  | { ok: false; reason: "unknown_group" | "not_a_member" };

/** A proposal or an application message. */
export interface AppendWrite {
  kind: "proposal" | "application";
  /** The message's own epoch. */
  epoch: number;
  sender: string;
  /**
   * The sender's leaf: the append is refused if the device no longer sits there. Undefined (application
   * messages, whose sender leaf is encrypted): the device must sit at some leaf.
   */
  leaf: number | undefined;
  message: Uint8Array;
  /** base64url of `message`, when the caller already has it. */
  text?: string | undefined;
  at: number;
  /** base64url ProposalRef, for a proposal. */
  ref?: string | undefined;
  /** Past epochs still accepted for an application message. */
  window: number;
}

export type AppendOutcome =
  | Accepted
  | { ok: false; reason: "wrong_epoch"; epoch: number; winner: string | null }
  | { ok: false; reason: "stale_epoch"; epoch: number }
  | { ok: false; reason: "not_a_member" | "unknown_group" | "duplicate_proposal" | "too_many_proposals" };

/** The commit that won an epoch. */
export interface WinningCommit {
  hash: string;
  seq: number;
  sender: string;
}

export interface ForkReport {
  reporter: string;
  epoch: number;
  commitHash: string;
  reason: string;
  at: number;
}

export type ForkOutcome =
  | { ok: true; fork: ForkRecord; created: boolean; event: GroupEvent | undefined; announced: boolean }
  | { ok: false; reason: "unknown_group" | "not_a_member" | "unknown_commit" };

export interface GroupStatus {
  epoch: number;
  seq: number;
  /** Entries up to this seq were deleted. */
  base: number;
  members: number;
  forks: ForkRecord[];
}

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
  /** Retention: log entries and Welcomes up to this seq are deleted. */
  base: number;
  memberships: Membership[];
}

/**
 * What forgetDeviceGroup did: `deleted` the entry, `kept` it, found it changed by another step since it
 * began (`moved`: that step settles it), or found none (`absent`; indexed again if a commit added the
 * device meanwhile).
 */
export type IndexSettlement = "deleted" | "kept" | "moved" | "absent";

/**
 * An add in flight (beginAdd) keeps its device's index entry this long at most: a request that died
 * between beginAdd and endAdd must not keep it for ever. Far above how long a commit request can take
 * between the two (a store command fails within seconds while Redis is away).
 */
export const PENDING_ADD_MS = 10 * 60_000;

/** A device's groups at this hub: groupId → its number in the device's cursors. */
export interface DeviceGroups {
  numbers: ReadonlyMap<string, number>;
  /** The highest number ever given (numbers are never reused). */
  next: number;
}

export interface Invitation {
  from: string;
  from_device: string;
  hub: string;
  group_id: string;
}

/** A device's acknowledged position in one of its membership stretches of a group. */
export interface StretchAck {
  /**
   * The stretch's `from` (the seq of the commit that added the device; 0 for the creator): what names a
   * stretch, since no commit adds a device twice. An index among the device's stretches would name a new
   * stretch like one the group forgot, and carry over what was acknowledged in it.
   */
  from: number;
  position: number;
}

export interface AckOutcome {
  /** The device has read all of its stretches in the group to the end; the group forgot it. */
  done: boolean;
  /**
   * The `from`s of the stretches named that the group does not hold: those it forgot in this step (the
   * device's first stretches, read to their `removed`; all of them when `done`) and those named that it
   * forgot before. Stretch names are never reused, so their cursor positions are no longer needed.
   */
  forgotten: number[];
  /** Entries deleted because every member has read past them. */
  trimmed: number;
}

export type DepartOutcome =
  | {
      ok: true;
      /** The leaf the device left behind for a member's Remove; undefined when it held none. */
      leaf: number | undefined;
      /** Entries deleted because the device was the last to have them unread. */
      trimmed: number;
      /** The `from`s of the stretches the group forgot. */
      forgotten: number[];
    }
  | { ok: false; reason: "unknown_group" };

export interface SweepOutcome {
  /** Log entries (and with them Welcomes) deleted. */
  entries: number;
  invitations: number;
}

export interface DeliveryStore {
  /** False when a group with this id exists. */
  createGroup(group: NewGroup): Promise<boolean>;
  loadGroup(groupId: string): Promise<GroupSnapshot | undefined>;
  commit(groupId: string, write: CommitWrite): Promise<CommitOutcome>;
  append(groupId: string, write: AppendWrite): Promise<AppendOutcome>;
  /**
   * The commit that ended `epoch`, if one did and it is still known: winners are kept while their commit
   * is in the log, and for the latest `winnerEpochs` epochs in any case.
   */
  winningCommit(groupId: string, epoch: number): Promise<WinningCommit | null>;
  /**
   * Records a fork once per epoch, with a notice in the log; a repeat returns the first record. Only for
   * epochs whose winner is still known; at most FORK_RECORDS are kept (the oldest other epoch's goes), and a
   * record goes with its epoch's winner.
   */
  reportFork(groupId: string, report: ForkReport): Promise<ForkOutcome>;
  groupStatus(groupId: string): Promise<GroupStatus | undefined>;

  /**
   * Notes that a device may be a member of these groups (a hint; the group's own memberships decide).
   * Idempotent. Commits use beginAdd instead, which also marks the add as in flight.
   */
  indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void>;
  deviceGroups(device: string): Promise<DeviceGroups>;
  /** The number the device's index gives the group (deviceGroups's entry for it alone), if any. */
  deviceGroupNumber(device: string, groupId: string): Promise<number | undefined>;
  /**
   * Before a commit that adds the device to the group, or the create that makes it the creator (written
   * first, so a crash between the two loses nothing): indexes the group for the device if it is not
   * (`added`; `present`: it was), and marks this add (`token`, unique to the request) as in flight, which
   * keeps forgetDeviceGroup from dropping the entry until endAdd with the same token, or until
   * PENDING_ADD_MS passed. `full` (nothing written) when the group is not indexed and the device is in
   * `max` groups already: checked in the same step as the place is taken, so that concurrent requests
   * cannot both take the last place. Unless `full`, the caller calls endAdd once it has its answer.
   */
  beginAdd(
    device: string,
    groupId: string,
    token: string,
    max: number,
  ): Promise<"added" | "present" | "full">;
  /** After that commit was answered, accepted or not (or failed): this add's mark goes; others stay. */
  endAdd(device: string, groupId: string, token: string): Promise<void>;
  /**
   * Settles the device's index entry for the group against the group's memberships (decisions.md D18):
   * the entry goes if the device has no stretch in the group and no add of it is in flight or began or
   * ended since this call began; otherwise it stays. The memberships are in the group's hash slot and the
   * index in the device's, so no one step can see both: the Redis store reads the entry and its add
   * version, then the memberships, then changes the entry only if both are as read.
   */
  forgetDeviceGroup(device: string, groupId: string): Promise<IndexSettlement>;
  /**
   * Indexes the group for the device if the group has stretches of it and the index lacks it; true if it
   * did. Run after a commit adds the device, in case its entry went anyway (an add in flight for longer
   * than PENDING_ADD_MS).
   */
  indexIfMember(device: string, groupId: string): Promise<boolean>;
  memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined>;
  /** Log entries with `from <= seq <= to` that still exist (seq > base), in order. */
  readLog(groupId: string, from: number, to: number): Promise<LogEntry[]>;
  welcome(groupId: string, seq: number): Promise<Uint8Array | undefined>;

  /** The device's acknowledged positions, by cursor stream key. */
  cursor(device: string): Promise<ReadonlyMap<string, number>>;
  /** Raises each named position to the given value; never lowers one. */
  advanceCursor(device: string, positions: ReadonlyMap<string, number>): Promise<void>;
  /** Deletes these positions (of stretches the group forgot: no stream of that name comes again). */
  dropCursorStreams(device: string, streams: readonly string[]): Promise<void>;
  /**
   * Raises the device's acknowledged positions in a group's stretches (never lowers; a stretch the device
   * does not have is ignored), forgets the device's first stretches it has read to their `removed`, then
   * deletes the
   * log entries and Welcomes every device with a stretch in the group has read past. A device that has
   * read all its stretches to the end is forgotten by the group.
   */
  ackGroup(groupId: string, device: string, acks: readonly StretchAck[]): Promise<AckOutcome>;
  /**
   * The device leaves the group at this hub, in one step: it stops being a member (no submission, no fork
   * report, not in `leafOf`), its leaf is marked departed but keeps its place (the roster must stay the
   * tree's, so that Adds land where MLS puts them and a member's Remove of the leaf stays valid), and the
   * group forgets its stretches at once, as when it has read them all (retention may then move on). The
   * caller then drops the group from the device's index (forgetDeviceGroup). A device with neither leaf nor
   * stretches in the group gets `ok` with no leaf: a repeat changes nothing.
   */
  depart(groupId: string, device: string): Promise<DepartOutcome>;
  /** Deletes log entries, Welcomes and invitations accepted before `cutoff` (ms), at most `max` each call. */
  sweep(cutoff: number, now: number, max: number): Promise<SweepOutcome>;

  /**
   * Queues an invitation for every device of `acct`; returns its sequence number, or undefined (nothing
   * queued) when `max` invitations are waiting for the account already.
   */
  queueInvitation(
    acct: string,
    invitation: Invitation,
    at: number,
    max?: number,
  ): Promise<number | undefined>;
  /** The seq of the last invitation queued for `acct` (0: none). */
  invitationCount(acct: string): Promise<number>;
  /** Up to `max` invitations with seq > `after` that still exist, in order. */
  invitations(acct: string, after: number, max: number): Promise<{ seq: number; invitation: Invitation }[]>;
  /**
   * Deletes the account's invitations with seq <= `upTo` (those every device of the account has read),
   * never one that was not queued yet: sequence numbers stay as they were, and only what is left counts
   * towards `max` in queueInvitation. Returns how many went.
   */
  trimInvitations(acct: string, upTo: number): Promise<number>;
  /** How many groups the device is indexed in. */
  deviceGroupCount(device: string): Promise<number>;

  ready(): Promise<boolean>;
  close(): Promise<void>;
}
