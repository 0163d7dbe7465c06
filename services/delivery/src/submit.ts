import { randomUUID } from "node:crypto";
import {
  LIMITS,
  ProtocolError,
  fromBase64url,
  toBase64url,
  type SubmitMessageResponse,
} from "@mastodon-mls/protocol";
import {
  decodeMlsMessageStrict,
  screenMessage,
  sha256,
  type DeviceCertificate,
  type ScreenedCommit,
  type ScreenedMessage,
} from "@mastodon-mls/bridge";
import { errorSummary } from "@mastodon-mls/service-kit";
import type { MLSMessage } from "ts-mls";
import type { DeliveryContext } from "./context.js";
import { hubView, leafOf, placeAdds } from "./roster.js";
import type { Accepted, AppendOutcome, CommitOutcome, GroupSnapshot } from "./store/types.js";
import { checkWelcome } from "./welcome.js";

/** Who submits: all a submission needs of the verified device certificate. */
export type Requester = Pick<DeviceCertificate, "deviceIdText">;

export interface Submission {
  message: Uint8Array;
  /** base64url of `message`, when the caller has it (JSON bodies, stream frames). */
  text?: string | undefined;
  welcome?: Uint8Array | undefined;
}

/** Where a submission came from, for the metrics. */
export type SubmitPath = "http" | "stream";

/** A group id from a URL or body: canonical base64url of 1 to 64 bytes. */
export function parseGroupId(text: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(text, 64);
  } catch (e) {
    // fromBase64url's size error is a 413, meant for bodies; an id too long for its field is malformed.
    if (e instanceof ProtocolError && e.code === "payload_too_large") {
      throw new ProtocolError("bad_request", "The group id is longer than 64 bytes.");
    }
    throw e;
  }
  if (bytes.byteLength === 0) throw new ProtocolError("bad_request", "The group id is empty.");
  return bytes;
}

/**
 * One MLSMessage for a group (POST /v1/groups/:groupId/messages, or a `submit` frame): decode, rate limits,
 * screen against the hub's view, then accept in one atomic store step and announce it. Refusals are
 * counted by kind and reason.
 *
 * An application message is a PrivateMessage: its sender leaf is encrypted and the hub screens only its
 * group id, content type and epoch (SCR-2, SCR-3, SCR-7). It needs no snapshot of the group: the store
 * step itself checks, atomically with the append, that the requester sits at a leaf and that the epoch is
 * within the window. Handshakes are screened against a snapshot, and the commit's epoch compare-and-set
 * makes the snapshot's roster the one the commit applies to.
 */
export async function submitMessage(
  ctx: DeliveryContext,
  groupId: string,
  requester: Requester,
  submission: Submission,
  path: SubmitPath = "http",
): Promise<SubmitMessageResponse> {
  let kind = "unknown";
  try {
    const groupIdBytes = parseGroupId(groupId);
    const msg = decodeMlsMessageStrict(submission.message);
    kind = kindOf(msg);
    await ctx.rateLimits.take("submissions", requester.deviceIdText);
    if (kind === "commit") await ctx.rateLimits.take("commits", requester.deviceIdText);
    const accepted =
      msg.wireformat === "mls_private_message"
        ? await acceptApplication(ctx, groupId, groupIdBytes, msg, requester, submission)
        : await acceptHandshake(ctx, groupId, groupIdBytes, msg, requester, submission);
    ctx.metrics.messagesIn.inc({ kind, path });
    if (!accepted.announced) ctx.notifier.publish(accepted.event);
    return { seq: accepted.seq, epoch: accepted.epoch };
  } catch (e) {
    if (e instanceof ProtocolError) {
      const rule = /^((SCR|WEL)-\d+):/.exec(e.message)?.[1];
      ctx.metrics.refused.inc({ kind, reason: e.code === "screening_failed" ? (rule ?? e.code) : e.code });
    }
    throw e;
  }
}

async function acceptApplication(
  ctx: DeliveryContext,
  groupId: string,
  groupIdBytes: Uint8Array,
  msg: Extract<MLSMessage, { wireformat: "mls_private_message" }>,
  requester: Requester,
  submission: Submission,
): Promise<Accepted> {
  const epoch = msg.privateMessage.epoch;
  // SCR-1…3 here; SCR-7 (the epoch window) against the group's epoch in the store step below.
  await screenMessage(msg, { groupId: groupIdBytes, epoch, leafCount: 0, isBlank: () => true });
  checkWelcome(submission.welcome, []);
  return appended(
    await ctx.store.append(groupId, {
      kind: "application",
      epoch: Number(epoch),
      sender: requester.deviceIdText,
      leaf: undefined,
      message: submission.message,
      text: submission.text,
      at: ctx.now(),
      window: ctx.config.appEpochWindow,
    }),
  );
}

async function acceptHandshake(
  ctx: DeliveryContext,
  groupId: string,
  groupIdBytes: Uint8Array,
  msg: MLSMessage,
  requester: Requester,
  submission: Submission,
): Promise<Accepted> {
  const snap = await ctx.store.loadGroup(groupId);
  if (!snap) throw new ProtocolError("unknown_group");
  const leaf = leafOf(snap, requester.deviceIdText);
  if (leaf === undefined) throw new ProtocolError("not_a_member");
  const screened = await screen(ctx, msg, snap, groupIdBytes, leaf);
  if (screened.kind === "commit") return acceptCommit(ctx, snap, leaf, requester, submission, screened);
  checkWelcome(submission.welcome, []);
  return appended(
    await ctx.store.append(groupId, {
      kind: screened.kind,
      epoch: Number(screened.epoch),
      sender: requester.deviceIdText,
      leaf,
      message: submission.message,
      text: submission.text,
      at: ctx.now(),
      ref: screened.kind === "proposal" ? screened.ref : undefined,
      window: ctx.config.appEpochWindow,
    }),
  );
}

async function screen(
  ctx: DeliveryContext,
  msg: MLSMessage,
  snap: GroupSnapshot,
  groupIdBytes: Uint8Array,
  leaf: number,
): Promise<ScreenedMessage> {
  try {
    return await screenMessage(msg, hubView(snap, groupIdBytes, leaf), {
      applicationEpochWindow: ctx.config.appEpochWindow,
      now: Math.floor(ctx.now() / 1000),
    });
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    if (e.code === "wrong_epoch") {
      const epoch = epochOf(msg);
      const winner =
        epoch !== undefined && epoch < snap.epoch ? await ctx.store.winningCommit(snap.groupId, epoch) : null;
      throw wrongEpoch(snap.epoch, winner?.hash ?? null, e.message);
    }
    if (e.code === "stale_epoch") throw new ProtocolError("stale_epoch", e.message, { epoch: snap.epoch });
    throw e;
  }
}

async function acceptCommit(
  ctx: DeliveryContext,
  snap: GroupSnapshot,
  leaf: number,
  requester: Requester,
  submission: Submission,
  screened: ScreenedCommit,
): Promise<Accepted> {
  const welcome = checkWelcome(submission.welcome, screened.adds);
  const adds = placeAdds(
    snap.roster,
    screened.removes,
    screened.adds.map((kp) => ({ device: kp.deviceId, acct: kp.acct })),
  );
  // The index entry goes first, marked as an add in flight until the commit is answered: if we stop
  // between the writes, the group's memberships still decide, and no forget of the device running
  // meanwhile can drop the entry (store beginAdd, forgetDeviceGroup). Groups per device: a device
  // already in as many groups as allowed cannot be added to another (checked as the place is taken).
  const token = randomUUID();
  const max = ctx.limits.groupsPerDevice;
  let outcome: CommitOutcome | undefined;
  try {
    // Inside the try: if one of them fails, or a device is full, the marks the others set end too.
    const placed = await Promise.all(
      adds.map((a) => ctx.store.beginAdd(a.member.device, snap.groupId, token, max)),
    );
    const full = adds.find((_, i) => placed[i] === "full");
    if (full) {
      throw new ProtocolError(
        "too_many_groups",
        `The device ${full.member.device} (${full.member.acct}) is in ${max} groups at this hub already.`,
        { device: full.member.device },
      );
    }
    outcome = await ctx.store.commit(snap.groupId, {
      expectedEpoch: snap.epoch,
      sender: requester.deviceIdText,
      senderLeaf: leaf,
      message: submission.message,
      text: submission.text,
      hash: toBase64url(sha256(submission.message)),
      at: ctx.now(),
      removes: screened.removes,
      removedDevices: screened.removes.flatMap((l) => snap.roster.get(l)?.device ?? []),
      adds,
      welcome,
    });
  } finally {
    if (adds.length > 0) await endAdds(ctx, snap.groupId, adds, token, outcome?.ok === true);
  }
  if (!outcome.ok) {
    if (outcome.reason === "wrong_epoch") throw wrongEpoch(outcome.epoch, outcome.winner);
    throw new ProtocolError(outcome.reason);
  }
  if (adds.length > 0) await indexAddedAgain(ctx, snap.groupId, adds);
  ctx.log.info(
    {
      group: snap.groupId,
      seq: outcome.seq,
      epoch: outcome.epoch,
      leaf,
      adds: adds.length,
      removes: screened.removes.length,
    },
    "commit accepted",
  );
  return outcome;
}

/**
 * The adds are no longer in flight. After a refused commit (or a failed one), the entries it wrote go
 * again unless something else keeps them, so that refused adds take no place in a device's budget. A
 * failure here only keeps them longer (until PENDING_ADD_MS, then the device's next read settles them),
 * so it is logged, not answered.
 */
async function endAdds(
  ctx: DeliveryContext,
  groupId: string,
  adds: readonly { member: { device: string } }[],
  token: string,
  accepted: boolean,
): Promise<void> {
  try {
    await Promise.all(
      adds.map(async ({ member }) => {
        await ctx.store.endAdd(member.device, groupId, token);
        if (!accepted) await ctx.store.forgetDeviceGroup(member.device, groupId);
      }),
    );
  } catch (e) {
    ctx.log.warn({ group: groupId, err: errorSummary(e) }, "ending the adds in flight failed");
  }
}

/**
 * An added device whose entry went anyway (its add stayed in flight longer than PENDING_ADD_MS, and a
 * settle took the mark for dead) is indexed again once the commit is in, and told to read. The commit is
 * accepted either way, so a store failure here is logged, not answered.
 */
async function indexAddedAgain(
  ctx: DeliveryContext,
  groupId: string,
  adds: readonly { member: { device: string } }[],
): Promise<void> {
  try {
    const indexed = await Promise.all(adds.map((a) => ctx.store.indexIfMember(a.member.device, groupId)));
    const devices = adds.filter((_, i) => indexed[i]).map((a) => a.member.device);
    if (devices.length > 0) ctx.notifier.publish({ kind: "devices", devices });
  } catch (e) {
    ctx.log.warn({ group: groupId, err: errorSummary(e) }, "indexing added devices after the commit failed");
  }
}

function appended(outcome: AppendOutcome): Accepted {
  if (outcome.ok) return outcome;
  switch (outcome.reason) {
    case "wrong_epoch":
      throw wrongEpoch(outcome.epoch, outcome.winner);
    case "stale_epoch":
      throw new ProtocolError("stale_epoch", undefined, { epoch: outcome.epoch });
    case "duplicate_proposal":
      throw new ProtocolError(
        "screening_failed",
        "SCR-10: this proposal was already accepted in this epoch.",
      );
    case "too_many_proposals":
      throw new ProtocolError(
        "screening_failed",
        `SCR-19: ${LIMITS.proposalsPerEpoch} proposals are held in this epoch already.`,
      );
    default:
      throw new ProtocolError(outcome.reason);
  }
}

/** 409 with WrongEpochDetails: the current epoch, and the commit that won the epoch the client tried. */
function wrongEpoch(epoch: number, winner: string | null, message?: string): ProtocolError {
  return new ProtocolError("wrong_epoch", message, { epoch, commit_hash: winner });
}

function kindOf(msg: MLSMessage): string {
  if (msg.wireformat === "mls_public_message") return msg.publicMessage.content.contentType;
  if (msg.wireformat === "mls_private_message") return msg.privateMessage.contentType;
  return "other";
}

function epochOf(msg: MLSMessage): number | undefined {
  if (msg.wireformat === "mls_public_message") return Number(msg.publicMessage.content.epoch);
  if (msg.wireformat === "mls_private_message") return Number(msg.privateMessage.epoch);
  return undefined;
}
