import type { ClientState, CiphersuiteImpl, LeafNode, PrivateMessage } from "ts-mls";
import { decryptSenderData } from "ts-mls/privateMessage.js";
import { leafAt } from "./leaves.js";

/**
 * The leaf that sent a PrivateMessage. ts-mls returns an application message's bytes without its sender,
 * yet DESIGN §8 needs the sender's identity to enforce `attributedTo`. The sender data is decrypted here
 * with the key of the message's epoch (current or retained); `processMessage` then verifies the content's
 * signature against this same leaf's key, which is what makes the answer trustworthy — call this only
 * together with a successful `processMessage`.
 */
export async function senderLeafOf(
  state: ClientState,
  pm: PrivateMessage,
  cs: CiphersuiteImpl,
): Promise<{ leafIndex: number; leaf: LeafNode; generation: number } | undefined> {
  const current = pm.epoch === state.groupContext.epoch;
  const past = current ? undefined : state.historicalReceiverData.get(pm.epoch);
  if (!current && past === undefined) return undefined;
  const secret = current ? state.keySchedule.senderDataSecret : past!.senderDataSecret;
  const tree = current ? state.ratchetTree : past!.ratchetTree;
  let data: Awaited<ReturnType<typeof decryptSenderData>>;
  try {
    data = await decryptSenderData(pm, secret, cs);
  } catch {
    return undefined;
  }
  if (data === undefined) return undefined;
  const leaf = leafAt(tree, data.leafIndex);
  return leaf === undefined ? undefined : { leafIndex: data.leafIndex, leaf, generation: data.generation };
}
