import { deviceIdText } from "@mastodon-mls/bridge";
import type { ClientState } from "ts-mls";
import { leafAt } from "../mls/leaves.js";
import type { GroupRecord, ProcessedCommit } from "../store/schemas.js";

// The commits of a group this device processed or made, each with who signed it (docs/protocol.md
// "Forks", FORK-3, FORK-4): a hub's `forked` notice names a commit and its sender on the hub's word, and
// this is what that word is checked against. As many as the fork records a hub keeps of a group (D5).

const KEPT = 64;

/** Remembers a commit the group took here; one per epoch (a device re-added to the group may see one again). */
export function rememberCommit(record: GroupRecord, commit: ProcessedCommit): void {
  const others = (record.processedCommits ?? []).filter((c) => c.epoch !== commit.epoch);
  record.processedCommits = [...others, commit].slice(-KEPT);
}

/**
 * A commit of another member that ts-mls processed in `before`: it verified the signature under the key
 * of the sender's leaf in that tree, so that leaf's device is its signer.
 */
export function rememberProcessed(
  record: GroupRecord,
  before: ClientState,
  senderLeaf: number,
  hash: string,
): void {
  const leaf = leafAt(before.ratchetTree, senderLeaf);
  if (leaf === undefined) return;
  const signer = deviceIdText(leaf.signaturePublicKey);
  rememberCommit(record, { epoch: Number(before.groupContext.epoch), hash, signer });
}

/** What a fork notice's commit and sender are worth against the commits this device knows. */
export type NoticeCheck =
  /** The commit this device took for that epoch, and the device that signed it. */
  | { kind: "proven" }
  /** A commit this device knows, named with another sender (or epoch): the hub made the notice up. */
  | { kind: "contradicted"; signer: string; epoch: number | undefined }
  /** This device took another commit for that epoch: the hub showed members different commits. */
  | { kind: "other_commit" }
  /** A commit this device never took (before it joined, or older than it remembers): the hub's word. */
  | { kind: "unseen" };

export function checkNotice(
  record: GroupRecord,
  ownDeviceId: string,
  notice: { epoch: number; commitHash: string; sender: string },
): NoticeCheck {
  const processed = record.processedCommits ?? [];
  // Own commits the group took are remembered by hash alone too (`promoted`, the last 16).
  const known =
    processed.find((c) => c.hash === notice.commitHash) ??
    ((record.promoted ?? []).includes(notice.commitHash)
      ? { epoch: undefined, signer: ownDeviceId }
      : undefined);
  if (known !== undefined) {
    const sameEpoch = known.epoch === undefined || known.epoch === notice.epoch;
    return known.signer === notice.sender && sameEpoch
      ? { kind: "proven" }
      : { kind: "contradicted", signer: known.signer, epoch: known.epoch };
  }
  return processed.some((c) => c.epoch === notice.epoch) ? { kind: "other_commit" } : { kind: "unseen" };
}
