import { bytesEqual, deviceIdText } from "@mastodon-mls/bridge";
import type { CiphersuiteImpl, ClientState, MLSMessage } from "ts-mls";
import { verifyMembershipTag } from "ts-mls/authenticatedContent.js";
import { toTbs, verifyFramedContentSignature } from "ts-mls/framedContent.js";
import { leafAt } from "./leaves.js";

/** The member leaf whose signature a handshake message carries, and that leaf's device. */
export interface VerifiedSigner {
  leafIndex: number;
  deviceId: string;
}

/**
 * Who signed a PublicMessage (our commits are sent as one), proven by its signature: the hub's envelope
 * names a sender too, but that is the hub's word, and a hub holds no member's key. When a commit cannot be
 * processed, ts-mls says nothing of who signed it, yet a fork must name its sender (forks.ts); this checks
 * the one thing the commit can prove on its own, the signature over the FramedContentTBS (RFC 9420 §6.1),
 * exactly as ts-mls's `unprotectPublicMessage` computes it, under the key of the sender's leaf in
 * `state`, the state of the epoch the message is for. The membership tag is not checked: it proves the
 * sender held this epoch's secrets, not who it was.
 *
 * Undefined unless the sender is a member leaf present in the tree and the signature verifies; never
 * throws (the message may be anything a hostile hub made up).
 */
export async function verifiedSigner(
  msg: MLSMessage,
  state: ClientState,
  cs: CiphersuiteImpl,
): Promise<VerifiedSigner | undefined> {
  try {
    if (msg.wireformat !== "mls_public_message") return undefined;
    const { content, auth } = msg.publicMessage;
    const context = state.groupContext;
    if (content.sender.senderType !== "member" || content.epoch !== context.epoch) return undefined;
    if (!bytesEqual(content.groupId, context.groupId)) return undefined;
    const leafIndex = content.sender.leafIndex;
    if (!Number.isSafeInteger(leafIndex) || leafIndex < 0) return undefined;
    const leaf = leafAt(state.ratchetTree, leafIndex);
    if (leaf === undefined) return undefined;
    const ok = await verifyFramedContentSignature(
      leaf.signaturePublicKey,
      "mls_public_message",
      content,
      auth,
      context,
      cs.signature,
    );
    return ok ? { leafIndex, deviceId: deviceIdText(leaf.signaturePublicKey) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a member's PublicMessage carries a membership tag made with the membership key of `state`'s
 * epoch (RFC 9420 §6.2). The signature covers the content only: the tag, and the confirmation tag of a
 * commit under it, are not signed, so a hub can spoil them in an honest commit without touching the
 * signature. A tag that verifies was made by a member of the epoch, which the hub is not (FORK-5).
 * Never throws.
 */
export async function membershipTagVerifies(
  msg: MLSMessage,
  state: ClientState,
  cs: CiphersuiteImpl,
): Promise<boolean> {
  try {
    if (msg.wireformat !== "mls_public_message" || msg.publicMessage.senderType !== "member") return false;
    const pm = msg.publicMessage;
    const contentTbs = toTbs(pm.content, "mls_public_message", state.groupContext);
    return await verifyMembershipTag(
      state.keySchedule.membershipKey,
      { contentTbs, auth: pm.auth },
      pm.membershipTag,
      cs.hash,
    );
  } catch {
    return false;
  }
}
