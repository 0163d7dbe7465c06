import {
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
import type { MLSMessage } from "ts-mls";
import type { DeliveryContext } from "./context.js";
import { hubView, leafOf, placeAdds } from "./roster.js";
import type { AppendOutcome, CommitOutcome, GroupSnapshot } from "./store/types.js";
import { checkWelcome } from "./welcome.js";

export interface Submission {
  message: Uint8Array;
  welcome?: Uint8Array | undefined;
}

/** A group id from a URL or body: canonical base64url of 1 to 64 bytes. */
export function parseGroupId(text: string): Uint8Array {
  const bytes = fromBase64url(text, 64);
  if (bytes.byteLength === 0) throw new ProtocolError("bad_request", "The group id is empty.");
  return bytes;
}

/**
 * POST /v1/groups/:groupId/messages: decode, check membership, screen against the hub's view, then accept
 * in one atomic store step. Refusals are counted by kind and reason.
 */
export async function submitMessage(
  ctx: DeliveryContext,
  groupId: string,
  requester: DeviceCertificate,
  submission: Submission,
): Promise<SubmitMessageResponse> {
  let kind = "unknown";
  try {
    const groupIdBytes = parseGroupId(groupId);
    const msg = decodeMlsMessageStrict(submission.message);
    kind = kindOf(msg);
    const snap = await ctx.store.loadGroup(groupId);
    if (!snap) throw new ProtocolError("unknown_group");
    const leaf = leafOf(snap, requester.deviceIdText);
    if (leaf === undefined) throw new ProtocolError("not_a_member");
    const screened = await screen(ctx, msg, snap, groupIdBytes, leaf);
    const accepted =
      screened.kind === "commit"
        ? await acceptCommit(ctx, snap, leaf, requester, submission, screened)
        : await acceptAppend(ctx, snap, leaf, requester, submission, screened);
    ctx.metrics.messagesIn.inc({ kind });
    return accepted;
  } catch (e) {
    if (e instanceof ProtocolError) {
      const rule = /^((SCR|WEL)-\d+):/.exec(e.message)?.[1];
      ctx.metrics.refused.inc({ kind, reason: e.code === "screening_failed" ? (rule ?? e.code) : e.code });
    }
    throw e;
  }
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
        kindOf(msg) !== "application" && epoch !== undefined && epoch < snap.epoch
          ? await ctx.store.winningCommit(snap.groupId, epoch)
          : null;
      throw wrongEpoch(snap.epoch, winner, e.message);
    }
    if (e.code === "stale_epoch") throw new ProtocolError("stale_epoch", e.message, { epoch: snap.epoch });
    throw e;
  }
}

async function acceptCommit(
  ctx: DeliveryContext,
  snap: GroupSnapshot,
  leaf: number,
  requester: DeviceCertificate,
  submission: Submission,
  screened: ScreenedCommit,
): Promise<SubmitMessageResponse> {
  const welcome = checkWelcome(submission.welcome, screened.adds);
  const adds = placeAdds(
    snap.roster,
    screened.removes,
    screened.adds.map((kp) => ({ device: kp.deviceId, acct: kp.acct })),
  );
  // The index hint goes first: if we stop between the two writes, the group's memberships still decide.
  await Promise.all(adds.map((a) => ctx.store.indexDeviceGroups(a.member.device, [snap.groupId])));
  const outcome: CommitOutcome = await ctx.store.commit(snap.groupId, {
    expectedEpoch: snap.epoch,
    sender: requester.deviceIdText,
    message: submission.message,
    hash: toBase64url(sha256(submission.message)),
    at: ctx.now(),
    removes: screened.removes,
    adds,
    welcome,
  });
  if (!outcome.ok) {
    if (outcome.reason === "wrong_epoch") throw wrongEpoch(outcome.epoch, outcome.winner);
    throw new ProtocolError("unknown_group");
  }
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
  ctx.notifier.publish({
    kind: "devices",
    devices: [...[...snap.roster.values()].map((m) => m.device), ...adds.map((a) => a.member.device)],
  });
  return { seq: outcome.seq, epoch: outcome.epoch };
}

async function acceptAppend(
  ctx: DeliveryContext,
  snap: GroupSnapshot,
  leaf: number,
  requester: DeviceCertificate,
  submission: Submission,
  screened: Exclude<ScreenedMessage, ScreenedCommit>,
): Promise<SubmitMessageResponse> {
  checkWelcome(submission.welcome, []);
  const outcome: AppendOutcome = await ctx.store.append(snap.groupId, {
    kind: screened.kind,
    epoch: Number(screened.epoch),
    sender: requester.deviceIdText,
    leaf,
    message: submission.message,
    at: ctx.now(),
    ref: screened.kind === "proposal" ? screened.ref : undefined,
    window: ctx.config.appEpochWindow,
  });
  if (!outcome.ok) {
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
      default:
        throw new ProtocolError(outcome.reason);
    }
  }
  ctx.notifier.publish({ kind: "devices", devices: [...snap.roster.values()].map((m) => m.device) });
  return { seq: outcome.seq, epoch: outcome.epoch };
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
