import { ProtocolError, type CommitRejectedBody, type ForkRecord as ForkWire } from "@mastodon-mls/protocol";
import type { DeviceCertificate } from "@mastodon-mls/bridge";
import type { DeliveryContext } from "./context.js";
import type { ForkRecord } from "./store/types.js";
import { parseGroupId } from "./submit.js";

export function forkWire(f: ForkRecord): ForkWire {
  return {
    seq: f.seq,
    epoch: f.epoch,
    commit_hash: f.commitHash,
    commit_seq: f.commitSeq,
    sender: f.sender,
    reporter: f.reporter,
    reason: f.reason,
  };
}

/**
 * POST /v1/groups/:groupId/commit-rejected (DESIGN §6, forks). A current member names an accepted commit
 * (by the epoch it ended and its hash) that it cannot process. The first report for an epoch is recorded
 * and appended to the group's log as a notice that every member's inbox shows as a `forked` item naming the
 * commit's sender; later reports for that epoch get the same record. The hub refuses nothing because of a
 * fork (decisions.md, D5): it cannot tell whether the commit or the reporter is at fault.
 */
export async function reportCommitRejected(
  ctx: DeliveryContext,
  groupId: string,
  reporter: DeviceCertificate,
  body: CommitRejectedBody,
): Promise<{ fork: ForkWire; created: boolean }> {
  parseGroupId(groupId);
  await ctx.rateLimits.take("submissions", reporter.deviceIdText);
  const outcome = await ctx.store.reportFork(groupId, {
    reporter: reporter.deviceIdText,
    epoch: body.epoch,
    commitHash: body.commit_hash,
    reason: body.reason,
    at: ctx.now(),
  });
  if (!outcome.ok) throw new ProtocolError(outcome.reason);
  if (outcome.created) {
    ctx.metrics.forks.inc();
    ctx.log.warn(
      {
        group: groupId,
        epoch: body.epoch,
        sender: outcome.fork.sender,
        reporter: reporter.deviceIdText,
        reason: body.reason,
      },
      "group forked",
    );
    if (outcome.event && !outcome.announced) ctx.notifier.publish(outcome.event);
  }
  return { fork: forkWire(outcome.fork), created: outcome.created };
}
