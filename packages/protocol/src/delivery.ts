import { z } from "zod";
import { CIPHERSUITE_ID, LIMITS } from "./constants.js";
import { AcctText, DeviceId, GroupId, b64url } from "./schemas.js";

// Wire shapes of the delivery service (DESIGN §6, §11). Every route is device-signed (DESIGN §7).

/** POST /v1/groups — the signing device becomes leaf 0 of a new group hosted on this hub. */
export const CreateGroupBody = z.object({ group_id: GroupId, ciphersuite: z.literal(CIPHERSUITE_ID) });
export type CreateGroupBody = z.infer<typeof CreateGroupBody>;
export const CreateGroupResponse = z.object({ group_id: GroupId, epoch: z.number().int().nonnegative() });
export type CreateGroupResponse = z.infer<typeof CreateGroupResponse>;

/**
 * POST /v1/groups/:groupId/messages — one MLSMessage. A commit that adds members carries its Welcome
 * (an MLSMessage too); the hub queues it for the added devices only once the commit is accepted.
 */
export const SubmitMessageBody = z.object({
  message: b64url(LIMITS.mlsMessageBytes),
  welcome: b64url(LIMITS.mlsMessageBytes).optional(),
});
export type SubmitMessageBody = z.infer<typeof SubmitMessageBody>;
export const SubmitMessageResponse = z.object({
  seq: z.number().int().nonnegative(),
  /** The group's epoch after this message (one more than before, for a commit). */
  epoch: z.number().int().nonnegative(),
});
export type SubmitMessageResponse = z.infer<typeof SubmitMessageResponse>;
/** The extra fields of a `409 wrong_epoch` answer. */
export const WrongEpochDetails = z.object({
  epoch: z.number().int().nonnegative(),
  /** base64url SHA-256 of the MLSMessage that won the epoch the client tried to commit to, if any. */
  commit_hash: z.string().nullable(),
});
export type WrongEpochDetails = z.infer<typeof WrongEpochDetails>;

/** POST /v1/invitations — a pointer for an account of this instance; the Welcome waits at the hub. */
export const InvitationBody = z.object({
  acct: AcctText,
  hub: z.string().url().max(2048),
  group_id: GroupId,
});
export type InvitationBody = z.infer<typeof InvitationBody>;
export const InvitationResponse = z.object({ queued: z.literal(true) });

/** Inbox items, in order. `cursor` on each item is opaque; ack the last one processed. */
export const InboxMessage = z.object({
  kind: z.literal("message"),
  group_id: GroupId,
  seq: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  sender: DeviceId,
  message: b64url(LIMITS.mlsMessageBytes),
});
export const InboxWelcome = z.object({
  kind: z.literal("welcome"),
  group_id: GroupId,
  /** The group's sequence number of the commit this Welcome belongs to: read the group after it. */
  seq: z.number().int().nonnegative(),
  welcome: b64url(LIMITS.mlsMessageBytes),
});
export const InboxInvitation = z.object({
  kind: z.literal("invitation"),
  from: AcctText,
  from_device: DeviceId,
  hub: z.string().url(),
  group_id: GroupId,
});
export const InboxRemoved = z.object({
  kind: z.literal("removed"),
  group_id: GroupId,
  seq: z.number().int(),
});
/**
 * A member reported that it cannot process the commit that ended `epoch` (POST …/commit-rejected): the
 * group has forked. `sender` is the device that sent that commit. Every member's inbox gets this item,
 * in log order at `seq`; the hub keeps ordering the group (docs/decisions.md, D5).
 */
export const InboxForked = z.object({
  kind: z.literal("forked"),
  group_id: GroupId,
  seq: z.number().int().nonnegative(),
  /** The epoch the rejected commit ended (the reporter is stuck in it). */
  epoch: z.number().int().nonnegative(),
  /** base64url SHA-256 of the rejected commit, as in `409 wrong_epoch`. */
  commit_hash: z.string(),
  /** The group seq of the rejected commit. */
  commit_seq: z.number().int().nonnegative(),
  /** The device that sent the rejected commit. */
  sender: DeviceId,
  /** The device that reported it. */
  reporter: DeviceId,
  reason: z.string(),
});
/**
 * Messages of this group up to and including `seq` were deleted (retention) before this device read
 * them. Its state is probably behind for good: it must be re-added (removed and added again by a member).
 */
export const InboxBehindRetention = z.object({
  kind: z.literal("behind_retention"),
  group_id: GroupId,
  /** The last sequence number this device missed; the next item of the group, if any, is after it. */
  seq: z.number().int().nonnegative(),
});
export const InboxItemBody = z.discriminatedUnion("kind", [
  InboxMessage,
  InboxWelcome,
  InboxInvitation,
  InboxRemoved,
  InboxForked,
  InboxBehindRetention,
]);
export const InboxItem = z.intersection(InboxItemBody, z.object({ cursor: z.string().max(4096) }));
export type InboxItem = z.infer<typeof InboxItem>;

/** GET /v1/inbox?after=<cursor>&limit=<n> */
export const InboxQuery = z.object({
  after: z
    .string()
    .max(64 * 1024)
    .optional(),
  limit: z.coerce.number().int().min(1).max(LIMITS.inboxPage).optional(),
});
export const InboxResponse = z.object({
  items: z.array(InboxItem),
  /** Pass as `after` for the next page; ack it once everything up to it is processed. */
  cursor: z.string(),
  more: z.boolean(),
});
export type InboxResponse = z.infer<typeof InboxResponse>;

/** POST /v1/inbox/ack */
export const AckBody = z.object({ cursor: z.string().max(64 * 1024) });
export const AckResponse = z.object({ acked: z.literal(true) });

/**
 * GET /v1/stream (WebSocket). The server speaks first with a challenge; the client's first frame is
 * `auth`, an Authorization header value signed over method "GET", path "/v1/stream" and the challenge
 * bytes as the body. After `ready`, the server pushes `items` frames; the client may `ack`.
 */
export const StreamServerFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("challenge"), challenge: z.string() }),
  z.object({ type: z.literal("ready"), cursor: z.string() }),
  z.object({ type: z.literal("items"), items: z.array(InboxItem), cursor: z.string() }),
  z.object({ type: z.literal("error"), error: z.string(), message: z.string() }),
  /** A `submit` frame's message was accepted: the same answer as `201` on the HTTP route. */
  z.object({
    type: z.literal("submitted"),
    id: z.string(),
    seq: z.number().int().nonnegative(),
    epoch: z.number().int().nonnegative(),
  }),
  /** A `submit` frame's message was refused: the HTTP route's error body (code, message, extra fields). */
  z.object({
    type: z.literal("refused"),
    id: z.string(),
    error: z.string(),
    message: z.string(),
    /** `wrong_epoch` and `stale_epoch`: the group's current epoch. */
    epoch: z.number().int().nonnegative().optional(),
    /** `wrong_epoch`: as in WrongEpochDetails. */
    commit_hash: z.string().nullable().optional(),
    /** `rate_limited`: seconds to wait. */
    retry_after: z.number().int().nonnegative().optional(),
  }),
]);
export type StreamServerFrame = z.infer<typeof StreamServerFrame>;
export const StreamClientFrame = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("auth"),
    authorization: z.string().max(8192),
    after: z
      .string()
      .max(64 * 1024)
      .optional(),
  }),
  z.object({ type: z.literal("ack"), cursor: z.string().max(64 * 1024) }),
  /**
   * Submit one MLSMessage over the authenticated stream (docs/decisions.md, D6), exactly as POST
   * /v1/groups/:groupId/messages (same screening, ordering, limits); answered by `submitted` or `refused`
   * with the same `id`.
   */
  z.object({
    type: z.literal("submit"),
    /** Chosen by the client to match the answer; answers come in the order of the submit frames. */
    id: z.string().min(1).max(64),
    group_id: GroupId,
    message: b64url(LIMITS.mlsMessageBytes),
    welcome: b64url(LIMITS.mlsMessageBytes).optional(),
  }),
]);
export type StreamClientFrame = z.infer<typeof StreamClientFrame>;

/** WebSocket close codes. */
export const STREAM_CLOSE = {
  /** The server is going away or the client was too slow: reconnect and resume from the last cursor. */
  resume: 4000,
  authFailed: 4001,
  badFrame: 4002,
  /** The device is no longer a member anywhere it was listening. */
  removed: 4003,
} as const;

export { DeviceId };

/** The extra field of a `429 rate_limited` answer (also in the Retry-After header). */
export const RateLimitedDetails = z.object({ retry_after: z.number().int().nonnegative() });

/**
 * POST /v1/groups/:groupId/commit-rejected — this member cannot process the accepted commit that ended
 * `epoch`. The hub records a fork once per epoch and tells every member (InboxForked).
 */
export const CommitRejectedBody = z.object({
  epoch: z.number().int().nonnegative(),
  /** base64url SHA-256 of the commit (the MLSMessage as delivered). */
  commit_hash: z.string().regex(/^[A-Za-z0-9_-]{43}$/, "must be a base64url SHA-256"),
  /** A short reason code, e.g. a screening rule id or `processing_failed`. */
  reason: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "must be a short reason code"),
});
export type CommitRejectedBody = z.infer<typeof CommitRejectedBody>;
export const ForkRecord = z.object({
  seq: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  commit_hash: z.string(),
  commit_seq: z.number().int().nonnegative(),
  sender: DeviceId,
  reporter: DeviceId,
  reason: z.string(),
});
export type ForkRecord = z.infer<typeof ForkRecord>;
/** `201` for the first report of that epoch, `200` when it was already recorded. */
export const CommitRejectedResponse = z.object({ forked: z.literal(true), fork: ForkRecord });
export type CommitRejectedResponse = z.infer<typeof CommitRejectedResponse>;

/**
 * POST /v1/groups/:groupId/departure — the signing device leaves the group at this hub (docs/protocol.md
 * §6, D17): nothing more is delivered to it, it can submit nothing more, and the group no longer counts
 * against its groups here. Its leaf stays in the tree, and in the hub's roster, until a member commits
 * its Remove. A repeat, or a device that was not in the group, gets the same answer with `leaf` null.
 */
export const DepartureBody = z.object({}).strict();
export type DepartureBody = z.infer<typeof DepartureBody>;
export const DepartureResponse = z.object({
  departed: z.literal(true),
  /** The leaf this device left, which waits for a member's Remove; null when it held none here. */
  leaf: z.number().int().nonnegative().nullable(),
});
export type DepartureResponse = z.infer<typeof DepartureResponse>;

/** GET /v1/groups/:groupId — the hub's view of a group, for its members. */
export const GroupStatusResponse = z.object({
  group_id: GroupId,
  epoch: z.number().int().nonnegative(),
  /** The sequence number of the last accepted message. */
  seq: z.number().int().nonnegative(),
  /** Messages up to this seq were deleted (retention); 0 when none were. */
  retained_after: z.number().int().nonnegative(),
  members: z.number().int().nonnegative(),
  /** Forks reported so far, oldest first. */
  forks: z.array(ForkRecord),
});
export type GroupStatusResponse = z.infer<typeof GroupStatusResponse>;
