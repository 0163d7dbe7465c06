import type { GroupView, AcceptedProposal } from "@mastodon-mls/bridge";
import { decodeMlsMessageStrict } from "@mastodon-mls/bridge";
import type { GroupSnapshot, MemberRecord } from "./store/types.js";

/** The hub's screening view of a group: its roster, and the proposals accepted this epoch. */
export function hubView(snap: GroupSnapshot, groupId: Uint8Array, senderLeaf: number): GroupView {
  const acceptedProposals = new Map<string, AcceptedProposal>();
  for (const [ref, stored] of snap.proposals) {
    // Stored only after screening, so these decode; anything else is skipped, and a commit naming it fails.
    const msg = decodeMlsMessageStrict(stored.message);
    if (msg.wireformat === "mls_public_message" && msg.publicMessage.content.contentType === "proposal") {
      acceptedProposals.set(ref, {
        proposal: msg.publicMessage.content.proposal,
        senderLeaf: stored.senderLeaf,
      });
    }
  }
  return {
    groupId,
    epoch: BigInt(snap.epoch),
    leafCount: Math.max(-1, ...snap.roster.keys()) + 1,
    isBlank: (leaf) => !snap.roster.has(leaf),
    deviceAt: (leaf) => snap.roster.get(leaf)?.device,
    senderLeaf,
    acceptedProposals,
  };
}

/** The device's leaf, while it is a member: a leaf it departed from (store `depart`) does not count. */
export function leafOf(snap: GroupSnapshot, device: string): number | undefined {
  for (const [leaf, member] of snap.roster) if (member.device === device && !member.departed) return leaf;
  return undefined;
}

/**
 * Where MLS puts the added members (RFC 9420 §12.3): Updates change no leaf, Removes blank theirs, then
 * each Add takes the leftmost blank leaf, extending the tree when there is none.
 */
export function placeAdds(
  roster: ReadonlyMap<number, MemberRecord>,
  removes: readonly number[],
  adds: readonly MemberRecord[],
): { leaf: number; member: MemberRecord }[] {
  const taken = new Set(roster.keys());
  for (const leaf of removes) taken.delete(leaf);
  const placed: { leaf: number; member: MemberRecord }[] = [];
  let next = 0;
  for (const member of adds) {
    while (taken.has(next)) next++;
    taken.add(next);
    placed.push({ leaf: next, member });
  }
  return placed;
}
