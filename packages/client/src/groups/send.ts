import { profileClientConfig } from "@mastodon-mls/bridge";
import { ProtocolError, encodeCleartext, type Activity } from "@mastodon-mls/protocol";
import { createApplicationMessage, encodeMlsMessage } from "ts-mls";
import type { DeviceContext } from "../context.js";
import { ClientError, ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import { assertNoBrokenVerification } from "../identity/sendPolicy.js";
import { messageHash } from "../mls/codec.js";
import { applicationPadding } from "../mls/padding.js";
import type { OutboxEntry } from "../store/schemas.js";
import { backoff } from "../util/backoff.js";
import { committableProposals } from "./changes.js";
import { assertCanWrite } from "./forks.js";

export interface SentMessage {
  seq: number;
  epoch: number;
}

/**
 * Encrypts one activity for the group and posts it. The state with the advanced ratchet is saved BEFORE
 * posting, with the activity in the group's outbox: a crash after posting must never lead to a second
 * message under the same key generation, nor lose the local copy of a message others received
 * (outbox.ts). A generation burnt by a failed post costs nothing. When the hub refuses the epoch (a commit
 * we have not processed yet), the client catches up and encrypts again. The history line is written once
 * the hub accepted the message, and made durable in the background.
 */
export async function sendActivity(
  ctx: DeviceContext,
  groupId: string,
  activity: Activity,
  catchUp: (hub: string) => Promise<void>,
  commitProposals: () => Promise<void>,
): Promise<SentMessage> {
  const cleartext = encodeCleartext(activity);
  await readHubOnce(ctx, ctx.activeGroup(groupId).record.hub, catchUp);
  for (let attempt = 0; attempt < ctx.retry.attempts; attempt++) {
    // A device stuck after a fork or behind retention would send into an epoch the others left.
    assertCanWrite(ctx, ctx.activeGroup(groupId));
    await assertNoBrokenVerification(ctx, ctx.activeGroup(groupId));
    // ts-mls refuses to send while holding a received, uncommitted proposal (UsageError): commit the
    // ones this device commits (DESIGN §9) first — catching up may have brought new ones.
    if (Object.keys(committableProposals(ctx.activeGroup(groupId).state)).length > 0) await commitProposals();
    const g = ctx.activeGroup(groupId);
    // What remains is what this device does not commit (an Add by reference, its own Remove): another
    // member will; it does not hold up this message.
    const padded = {
      ...g.state,
      unappliedProposals: {},
      clientConfig: { ...profileClientConfig(), paddingConfig: applicationPadding(cleartext.byteLength) },
    };
    const { newState, privateMessage } = await createApplicationMessage(padded, cleartext, ctx.cs);
    const bytes = encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage });
    // The proposals set aside above stay in the state: a commit from another member may name them.
    g.state = {
      ...newState,
      unappliedProposals: g.state.unappliedProposals,
      clientConfig: profileClientConfig(),
    };
    const entry: OutboxEntry = {
      hash: messageHash(bytes),
      at: new Date(ctx.clock()).toISOString(),
      activity,
    };
    g.record.outbox = [...(g.record.outbox ?? []), entry];
    await ctx.saveGroup(g);
    let seq: number;
    try {
      // Over the hub's open stream when events() has one (no request signature, no request), else HTTP.
      const hub = g.record.hub;
      const viaStream = ctx.streamSubmitters.get(hub)?.submit(groupId, bytes);
      seq = (await (viaStream ?? ctx.delivery(hub).submit(groupId, bytes))).seq;
    } catch (e) {
      // No answer, or the hub failed: it may have accepted the message. The entry stays until a read of
      // the hub settles it (outbox.ts). Said as such, so that nobody sends it again before knowing.
      if (e instanceof ServiceUnavailableError || (e instanceof ProtocolError && e.status >= 500)) {
        throw new ClientError(
          "message_outcome_unknown",
          `${failureOf(e)}; the message may have reached the group: the next sync shows it in the ` +
            "history if it did, or reports it as not sent",
        );
      }
      if (!(e instanceof ProtocolError)) throw e;
      // Refused: nobody has it. Out of the outbox, on disk too, so that no later read reports it again.
      g.record.outbox = g.record.outbox.filter((o) => o !== entry);
      await ctx.saveGroup(g);
      if (e.code === "wrong_epoch" || e.code === "stale_epoch") {
        await catchUp(g.record.hub);
        await backoff(ctx.retry, attempt);
        continue;
      }
      throw e;
    }
    await ctx.historyFlusher.appendLater(g, entry, seq);
    return { seq, epoch: Number(privateMessage.epoch) };
  }
  throw new ClientError(
    "commit_conflict",
    `the group's epoch kept moving; gave up after ${ctx.retry.attempts} attempts`,
  );
}

/** What went wrong with a post, naming the service where the error knows it. */
function failureOf(e: ServiceUnavailableError | ProtocolError): string {
  if (e instanceof ServiceRefusedError)
    return `the ${e.service} at ${e.url} answered ${e.code}: ${e.message}`;
  if (e instanceof ProtocolError) return `the hub answered ${e.code}: ${e.message}`;
  return e.message;
}

/**
 * The first send of a process reads its group's hub first (once per hub): what this device sent from a
 * state it no longer has (a directory put back from an older copy, D23) comes back and moves its ratchet
 * on before it encrypts anything. A hub that answered with an error is left to the post, which says why;
 * one that did not answer at all is not posted to as well (a second wait as long as the first), and
 * nothing is encrypted.
 */
async function readHubOnce(ctx: DeviceContext, hub: string, catchUp: (hub: string) => Promise<void>) {
  if (ctx.readHubs.has(ctx.delivery(hub).baseUrl)) return;
  try {
    await catchUp(hub);
  } catch (e) {
    if (e instanceof ServiceUnavailableError && e.status === undefined) throw e;
    if (!(e instanceof ProtocolError || e instanceof ServiceUnavailableError)) throw e;
  }
}
