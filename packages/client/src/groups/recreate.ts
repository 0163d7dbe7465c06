import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { leavesOf } from "../mls/leaves.js";
import { canonicalAccts } from "./changes.js";

// Re-creating a forked group (DESIGN §6: members' clients "offer to re-create the group without" the
// sender of the commit that forked it). Only when the user asks: the hub cannot tell whether the commit or
// the reporter was at fault (D5), and neither can one member alone.

export interface RecreatePlan {
  /** The accounts to add to the new group (this account included when it had other devices there). */
  accts: string[];
  /** The accounts left out. */
  without: string[];
}

/**
 * Who goes into the new group: every account of the old group as this device last saw it, minus
 * `without` — by default the accounts that sent a commit some member could not process — and minus
 * members that asked to leave. Works from a stuck device's view too (the tree at the epoch it is stuck in).
 */
export function recreatePlan(ctx: DeviceContext, groupId: string, without?: string[]): RecreatePlan {
  const g = ctx.activeGroup(groupId);
  const self = ctx.device.acct;
  const excluded =
    without !== undefined
      ? canonicalAccts(without)
      : [
          ...new Set(
            (g.record.forks ?? []).flatMap((f) =>
              f.senderAcct !== null && f.senderAcct !== self ? [f.senderAcct] : [],
            ),
          ),
        ];
  if (excluded.includes(self)) {
    throw new ClientError(
      "bad_input",
      "the new group is made by this device: it cannot leave out its own account",
    );
  }
  const own = g.state.privatePath.leafIndex;
  const leaving = new Set(g.record.leaving.map((l) => l.deviceId));
  const staying = leavesOf(g.state.ratchetTree).filter(
    (l) => l.acct !== "" && l.leafIndex !== own && !leaving.has(l.deviceId),
  );
  const accts = [...new Set(staying.map((l) => l.acct))].filter((a) => !excluded.includes(a));
  return { accts, without: excluded };
}
