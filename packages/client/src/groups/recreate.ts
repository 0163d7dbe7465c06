import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { leavesOf } from "../mls/leaves.js";
import { canonicalAccts } from "./changes.js";

// Re-creating a forked group (DESIGN §6: members' clients "offer to re-create the group without" the
// sender of the commit that forked it). Only when the user asks: the hub cannot tell whether the commit or
// the reporter was at fault (D5), and neither can one member alone. Left out by default are only the senders
// this device knows sent the commit (docs/protocol.md "Forks", FORK-2): one that is only the hub's word may
// be a member the hub wants rid of.

export interface RecreatePlan {
  /** The accounts to add to the new group (this account included when it had other devices there). */
  accts: string[];
  /** The accounts left out. */
  without: string[];
  /**
   * Accounts a fork names as its sender on the hub's word only (FORK-2), in the new group all the same:
   * the user may leave them out (`without`).
   */
  keptUnproven: string[];
}

/**
 * Who goes into the new group: every account of the old group as this device last saw it, minus
 * `without` — by default the accounts known to have sent a commit some member could not process (a fork
 * recorded before devices checked counts, as it did then) — and minus members that asked to leave. Works
 * from a stuck device's view too (the tree at the epoch it is stuck in).
 */
export function recreatePlan(ctx: DeviceContext, groupId: string, without?: string[]): RecreatePlan {
  const g = ctx.activeGroup(groupId);
  const self = ctx.device.acct;
  const senders = (proven: boolean) => [
    ...new Set(
      (g.record.forks ?? []).flatMap((f) =>
        f.senderAcct !== null && f.senderAcct !== self && (f.senderProven !== false) === proven
          ? [f.senderAcct]
          : [],
      ),
    ),
  ];
  const proven = senders(true);
  const excluded = without !== undefined ? canonicalAccts(without) : proven;
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
  const keptUnproven = senders(false).filter((a) => accts.includes(a) && !proven.includes(a));
  return { accts, without: excluded, keptUnproven };
}
