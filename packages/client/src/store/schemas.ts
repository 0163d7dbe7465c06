import { Activity, MEMBER_STATUSES } from "@mastodon-mls/protocol";
import { z } from "zod";

// The shapes of the files in a device directory. Bytes are base64url. Kept apart from the wire schemas:
// these change with the on-disk format version, those with the protocol.

const b64 = z.string().regex(/^[A-Za-z0-9_-]*$/);
const KeyPair = z.object({ publicKey: b64, signKey: b64 });

export const AccountList = z.object({
  /** The signed list (bridge `createDeviceList` …), base64url. */
  list: b64,
  version: z.number().int().positive(),
  /** The highest version the home directory accepted (0: none yet). */
  directoryVersion: z.number().int().nonnegative(),
  /** The highest version the profile proof names (0: none yet). */
  profileVersion: z.number().int().nonnegative(),
  /**
   * An account-key rotation's continuity statement (old key → the key `list` is under), sent with the
   * list to the directory; dropped once the directory has it.
   */
  rotation: b64.optional(),
});
export type AccountList = z.infer<typeof AccountList>;

/** Trust on first use (DESIGN §3): acct → pinned account key. */
export const PinsRecord = z.object({
  pins: z.record(
    z.string(),
    z.object({
      accountKey: b64,
      oobVerified: z.boolean(),
      pinnedAt: z.number(),
      /** The newest device-list version seen verified under that key (MV-19). */
      listVersion: z.number().int().nonnegative().optional(),
      /** When a confirmed pin was contradicted: sending stays blocked until the user decides. */
      keyChangedAt: z.number().optional(),
    }),
  ),
});
export type PinsRecord = z.infer<typeof PinsRecord>;

export const DeviceRecord = z.object({
  acct: z.string(),
  identity: z.string(),
  deviceId: z.string(),
  deviceKey: KeyPair,
  /** Only on the device that created the account key (DESIGN §3); null on linked devices (later issue). */
  accountKey: KeyPair.nullable(),
  certificate: b64,
  /** Needed to upload KeyPackages later (replacing the last-resort one, refilling). */
  mastodonToken: z.string(),
  home: z.object({ directory: z.string(), delivery: z.string() }),
  keyPackageTarget: z.number().int().positive(),
  /** The ref of the current last-resort KeyPackage, and whether a Welcome already used it. */
  lastResort: z.object({ ref: z.string(), used: z.boolean() }),
  /**
   * Refs of KeyPackages this device put into accepted Add commits, with when (Unix seconds). The directory
   * hands the same requester the same KeyPackage again within 10 minutes (DESIGN §5, meant for retries);
   * such a KeyPackage must not go into a second group's Welcome, whose invitee may have deleted its keys.
   */
  addedKeyPackages: z.record(z.string(), z.number()),
  createdAt: z.number(),
  /** When the directory's count of this device's KeyPackages was last checked (Unix seconds). */
  keyPackagesCheckedAt: z.number().optional(),
  /**
   * Accounts (`user@domain`) whose groups this device declines (groups/blocking.ts): a Welcome to a group
   * one of them is in is left at once. This device's own list; at most MAX_BLOCKED.
   */
  blocked: z.array(z.string().max(320)).max(1000).optional(),
  /** Origin of the account's Mastodon API (where the profile proof is published). Absent: https://<domain>. */
  mastodonUrl: z.string().optional(),
  /**
   * On a device holding the account key: the account's current signed device list (DESIGN §3) and how far
   * it has been published — to the home directory, then as the profile proof. A version above either
   * published one is work still to do (a set-up or revocation cut short finishes it on open). Absent or
   * null: a device without the account key, or a directory set up before device lists.
   */
  accountList: AccountList.nullable().optional(),
});
export type DeviceRecord = z.infer<typeof DeviceRecord>;

/**
 * A device being linked (docs/protocol.md "Linking a device"): its key exists, and is shown as a link
 * code, before a device holding the account key certifies it. Deleted once the device is set up.
 */
export const PendingLinkRecord = z.object({
  acct: z.string(),
  deviceKey: KeyPair,
  name: z.string(),
  createdAt: z.number().int(),
});
export type PendingLinkRecord = z.infer<typeof PendingLinkRecord>;

export const CursorsRecord = z.object({
  /** Every hub this device listens to, with the last inbox cursor it processed durably (null: none yet). */
  hubs: z.record(z.string(), z.string().nullable()),
  /** When a hub was first heard of through an invitation (Unix seconds): how long it is polled unjoined. */
  invitedAt: z.record(z.string(), z.number()).optional(),
});
export type CursorsRecord = z.infer<typeof CursorsRecord>;

export const KeyPackageRecord = z.object({
  ref: b64,
  lastResort: z.boolean(),
  /** MLSMessage(KeyPackage), as uploaded. */
  keyPackage: b64,
  initPrivateKey: b64,
  hpkePrivateKey: b64,
  notAfter: z.number(),
});
export type KeyPackageRecord = z.infer<typeof KeyPackageRecord>;

export const LeafCheck = z.object({
  /** Hash of what was verified (credential, signature key, certificate): re-verify when it changes. */
  fingerprint: z.string(),
  acct: z.string(),
  deviceId: z.string(),
  status: z.enum(["unverified", "invalid"]),
  reason: z.string().optional(),
  /** Its account's recorded status (`memberStatuses`) came from a verification that included this leaf. */
  covered: z.literal(true).optional(),
});
export type LeafCheck = z.infer<typeof LeafCheck>;

export const BufferedMessage = z.object({
  seq: z.number().int(),
  epoch: z.number().int(),
  sender: z.string(),
  message: b64,
});
export type BufferedMessage = z.infer<typeof BufferedMessage>;

/** A member device that proposed its own Remove (DESIGN §9 leave): committed even if the proposal is lost. */
/**
 * A message this device encrypted, written with the state whose ratchet it moved before it is posted
 * (groups/outbox.ts): until its line is known to be on disk in history.jsonl, this is the local copy.
 */
export const OutboxEntry = z.object({
  /** `messageHash` of the MLS message posted: how its echo from the hub is recognised. */
  hash: b64,
  at: z.string(),
  activity: Activity,
  /** The hub's sequence number, once it accepted the message (written with a later save). */
  seq: z.number().int().optional(),
});
export type OutboxEntry = z.infer<typeof OutboxEntry>;

export const LeavingDevice = z.object({
  leafIndex: z.number().int(),
  deviceId: z.string(),
  acct: z.string(),
});
export type LeavingDevice = z.infer<typeof LeavingDevice>;

/**
 * A member could not process the accepted commit that ended `epoch` (DESIGN §6 forks). Accts are null
 * when the device is not (or no longer) in this device's view of the tree.
 */
export const GroupFork = z.object({
  epoch: z.number().int(),
  commitHash: z.string(),
  commitSeq: z.number().int(),
  sender: z.string(),
  senderAcct: z.string().nullable(),
  /**
   * Whether this device knows `sender` sent the commit (docs/protocol.md "Forks"): true when the commit's
   * signature verified under that device's leaf key here (a commit this device could not process, FORK-1,
   * or one it processed or made, FORK-3), false when the sender is only the hub's word (no signature
   * verifies; a notice about a commit this device did not take, FORK-4). Absent: a fork recorded before
   * devices checked, counted as proven, as it was then.
   */
  senderProven: z.boolean().optional(),
  reporter: z.string(),
  reporterAcct: z.string().nullable(),
  reason: z.string(),
  /** This device is one that could not process the commit: its state stays at `epoch` for good. */
  stuck: z.boolean(),
  /** A fork this device found: whether the hub has its report yet (`pending` is retried on every sync). */
  report: z.enum(["pending", "done", "refused"]).optional(),
});
export type GroupFork = z.infer<typeof GroupFork>;

/**
 * A commit of the group this device processed, or made itself (groups/processedCommits.ts): what a hub's
 * fork notice is checked against (docs/protocol.md "Forks", FORK-3, FORK-4).
 */
export const ProcessedCommit = z.object({
  /** The epoch the commit ended. */
  epoch: z.number().int(),
  /** `messageHash` of the commit's bytes, as the hub names the commit that won an epoch. */
  hash: z.string().max(64),
  /** Device id of the leaf whose signature on it was verified (ts-mls does, when it processes one). */
  signer: z.string().max(64),
});
export type ProcessedCommit = z.infer<typeof ProcessedCommit>;

/** `base-<hash>.json` of a group: a whole encoded state, the base its `group.json` delta applies to. */
export const GroupBaseRecord = z.object({ state: b64 });
/** A base snapshot's name: base64url SHA-256 of its encoded state. */
export const BaseName = z.string().regex(/^[A-Za-z0-9_-]{43}$/);

export const CommitIntent = z.discriminatedUnion("kind", [
  /** `claimId` names this intent to directories: its retries reuse the same KeyPackages, nothing else does (D1). */
  z.object({
    kind: z.literal("add"),
    accts: z.array(z.string()),
    claimId: z.string().optional(),
    /** Add devices of accounts whose status is `no-proof` or `unreachable` (docs/decisions.md D8). */
    allowUnverified: z.boolean().optional(),
  }),
  z.object({ kind: z.literal("remove"), accts: z.array(z.string()) }),
  /** Remove these devices (leaves) only: an own device revoked from the account's list. */
  z.object({ kind: z.literal("remove-devices"), deviceIds: z.array(z.string()) }),
  /**
   * Give devices fresh leaves in one commit: Remove of their leaves and Add of a KeyPackage claimed for
   * each (a device stuck after a fork or behind retention). `replacing`: deviceId → the encryption key of
   * the leaf to replace (a leaf that changed since is left alone); `accts`: their accounts, to claim from.
   */
  z.object({
    kind: z.literal("readd"),
    replacing: z.record(z.string(), z.string()),
    accts: z.array(z.string()),
    claimId: z.string().optional(),
    allowUnverified: z.boolean().optional(),
  }),
  z.object({ kind: z.literal("update") }),
  /** Commit the proposals received this epoch and the Removes of members that asked to leave. */
  z.object({ kind: z.literal("proposals") }),
]);
export type CommitIntent = z.infer<typeof CommitIntent>;

/** Format 1 (the first release): no leave requests, no self-update clock. Read only by `migrate`. */
export const GroupRecordV1 = z.object({
  groupId: z.string(),
  hub: z.string(),
  status: z.enum(["active", "left"]),
  /** encodeGroupState bytes; null once the group is left (the keys are gone). */
  state: b64.nullable(),
  /** The hub's sequence number of the last message processed for this group (-1: none). */
  lastSeq: z.number().int(),
  leaves: z.record(z.string(), LeafCheck),
  /** Messages of a future epoch, kept until the commit that opens it has been processed. */
  buffered: z.array(BufferedMessage),
  /** Accounts added by an accepted commit of ours whose invitation pointer is not yet posted. */
  unsentInvitations: z.array(z.string()),
  /** DESIGN §2: every device self-updates after joining; true until that commit is accepted. */
  needsSelfUpdate: z.boolean(),
  /**
   * Changes whose commit lost its epoch to another member's (found while receiving), to be made again on
   * the new state by the next follow-up of whichever process runs one: on disk before the pending commit
   * that carried them is deleted (issue 6: the intent survives a restart).
   */
  retryIntents: z.array(CommitIntent).optional(),
  /**
   * The hashes of this device's last commits the group took (at most PROMOTED_KEPT): a pending.json that a
   * power loss brought back names one, and is then known done without asking the hub (which may have
   * forgotten that epoch's winner: the change would be made again).
   */
  promoted: z.array(z.string().max(64)).max(64).optional(),
});

export const GroupRecord = GroupRecordV1.extend({
  /**
   * With it, `state` is only the delta (the state without its ratchet tree and past epochs' receiver
   * data) and the rest is in the base snapshot `base-<stateBase>.json` beside this file: a message then
   * rewrites a tenth of the state, not all of it. Without it, `state` is the whole state (earlier files).
   */
  stateBase: BaseName.optional(),
  /**
   * With `stateBase`: the secret-tree nodes that differ from the base's, as [node index, encoded node]
   * (a message changes one). Without it, `state` carries the whole secret tree (earlier files).
   */
  secretNodes: z.array(z.tuple([z.number().int().nonnegative(), b64])).optional(),
  /** When this device's own leaf last got fresh keys (Unix seconds): DESIGN §2 asks for at least weekly. */
  ownLeafUpdatedAt: z.number(),
  /** Members that asked to leave (proposed their own Remove) and are still in the tree. */
  leaving: z.array(LeavingDevice),
  /**
   * The last verification status announced per member acct (docs/identity.md §6), so a restarted
   * process announces changes only (`status_changed`).
   */
  memberStatuses: z.record(z.string(), z.enum(MEMBER_STATUSES)).optional(),
  /** Forks of this group this device knows of (DESIGN §6, docs/decisions.md D5, D10), oldest first. */
  forks: z.array(GroupFork).optional(),
  /** The newest commits of the group this device processed or made, oldest first (at most 64). */
  processedCommits: z.array(ProcessedCommit).max(64).optional(),
  /**
   * The hub deleted messages of this group up to `seq` before this device read them (`behind_retention`):
   * it must be re-added. Cleared when a later commit is processed (the state provably follows the group).
   */
  behindRetention: z.object({ seq: z.number().int() }).optional(),
  /**
   * The hub echoed a commit of this device's own (`seq`, ending `epoch`) that its state knows nothing of:
   * the directory was put back from an older copy (groups/restored.ts). It must be re-added.
   */
  restoredBehind: z.object({ seq: z.number().int(), epoch: z.number().int() }).optional(),
  /**
   * The group that replaces this one: the one `recreateGroup` made here, or the first one joined whose
   * Welcome, signed by a member of this group, named this one (docs/decisions.md D21).
   */
  replacedBy: z.string().optional(),
  /**
   * The group this one re-creates: made here by `recreateGroup`, or named by the Welcome this device
   * joined from (D21). Every Welcome this device's commits make for the group names it in turn.
   */
  replaces: z.string().optional(),
  /** Who signed the Welcome that named `replaces` (absent when made here): a fork it sent undoes the link. */
  replacesSigner: z.object({ deviceId: z.string(), acct: z.string() }).optional(),
  /** Own messages whose history line may not be on disk yet, oldest first (groups/outbox.ts). */
  outbox: z.array(OutboxEntry).optional(),
  /**
   * Left here (Unix seconds), still to be left at the hub (groups/departure.ts, docs/decisions.md D17):
   * done once no own message there waits for its echo; retried by the follow-up work, for two weeks.
   */
  departPendingSince: z.number().optional(),
  /**
   * When the group, left here, was done with at its hub (Unix seconds): departed, or removed by a commit.
   * A left group with neither this nor `departPendingSince` was left before departures existed, and is
   * departed once (groups/departure.ts).
   */
  departedAt: z.number().optional(),
});
export type GroupRecord = z.infer<typeof GroupRecord>;

/**
 * `members.json` of a group: the parts of its record that change with commits and verification, not with
 * every message, and that are large (they grow with the group, or hold 64 commits): see DeviceStore.writeGroup.
 */
export const GroupMembersRecord = GroupRecord.pick({
  leaves: true,
  memberStatuses: true,
  processedCommits: true,
});
export type GroupMembersRecord = z.infer<typeof GroupMembersRecord>;

export const PendingCommitRecord = z
  .object({
    intent: CommitIntent,
    /** The epoch the commit was built on; accepted, it opens epoch + 1. */
    epoch: z.number().int(),
    /** base64url SHA-256 of `commit`, as the hub reports the winner of an epoch. */
    commitHash: z.string(),
    commit: b64,
    welcome: b64.nullable(),
    /** The state the commit leads to (earlier files): `newStateBase` names it in a base snapshot instead. */
    newState: b64.optional(),
    /**
     * The base snapshot (`base-<name>.json`) holding the state the commit leads to: written once, before the
     * commit is posted, and the group's base as it stands once the hub accepts the commit.
     */
    newStateBase: BaseName.optional(),
    /** Accounts whose devices this commit adds: they get an invitation once it is accepted. */
    invitees: z.array(z.string()),
  })
  .refine((p) => (p.newState === undefined) !== (p.newStateBase === undefined), {
    message: "a pending commit names its new state exactly once",
  });
export type PendingCommitRecord = z.infer<typeof PendingCommitRecord>;

export const HistoryEntry = z.object({
  v: z.literal(1),
  seq: z.number().int(),
  at: z.string(),
  from: z.string(),
  deviceId: z.string(),
  own: z.boolean(),
  /** The validated activity, or for a type this client does not know, only that type (shown, never dropped). */
  content: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("activity"), activity: Activity }),
    z.object({ kind: z.literal("unsupported"), type: z.string() }),
  ]),
});
export type HistoryEntry = z.infer<typeof HistoryEntry>;

/**
 * What `mls-dm login` learnt, kept in the device directory (sealed like every other file): the
 * Mastodon instance and token, the account, and where its services are. A device set up later uses it.
 */
export const SessionRecord = z.object({
  /** Origin of the Mastodon API, e.g. https://mastodon.example */
  instanceUrl: z.string(),
  /** `user@domain`, domain being the instance's LOCAL_DOMAIN. */
  acct: z.string(),
  mastodonToken: z.string(),
  /** This account's own directory and delivery service. */
  services: z.object({ directory: z.string(), delivery: z.string() }),
  /** Development only: other instances' services, where /.well-known/mls-services cannot be used. */
  servicesMap: z
    .record(
      z.string(),
      z.object({ directory: z.string(), delivery: z.string(), mastodon: z.string().optional() }),
    )
    .optional(),
});
export type SessionRecord = z.infer<typeof SessionRecord>;
