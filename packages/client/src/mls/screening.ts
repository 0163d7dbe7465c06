import { groupViewFromState, screenMessage, type ScreenedMessage } from "@mastodon-mls/bridge";
import type { ClientState, MLSMessage } from "ts-mls";

/**
 * THE single call site of handshake screening in the client (DESIGN §2/§6, notes/ts-mls-facts.md):
 * ts-mls 1.6.4 aborts the whole Node process on a commit removing a blank or out-of-range leaf, and can
 * be subverted through external senders, so every incoming group message passes here before ts-mls sees
 * it. The rules (SCR-1…SCR-19) live in the bridge, shared with the delivery service; the view is this
 * member's own ratchet tree and the proposals it accepted in this epoch.
 *
 * Throws ProtocolError: `screening_failed`, or `wrong_epoch`/`stale_epoch` for an epoch the caller
 * should have sorted out first (future epochs are buffered, past handshakes skipped).
 *
 * Time checks of added KeyPackages are off here: the committer and the hub checked them when the commit
 * was made, and a member processing it later (offline for a while, or with a slow clock) must not refuse a
 * commit the rest of the group accepted (review finding C4).
 */
export function screenIncoming(msg: MLSMessage, state: ClientState): Promise<ScreenedMessage> {
  return screenMessage(msg, groupViewFromState(state), { checkTimes: false });
}
