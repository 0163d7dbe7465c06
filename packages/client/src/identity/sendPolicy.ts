import type { DeviceContext, GroupHandle } from "../context.js";
import { ClientError } from "../errors.js";

/**
 * DESIGN §3: after comparing safety numbers with someone, a change of their account key must stop this
 * device from writing to them until the person decides — the new key may be an impersonator's. A member
 * account found `key-changed` once whose pin was confirmed out of band blocks sending to the group;
 * `acceptNewKey` (a new pin, not confirmed), confirming the safety number again, or removing them lifts it.
 */
export async function assertNoBrokenVerification(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  // The pin remembers the contradiction (keyChangedAt): a later lookup that says something else (the
  // proof hidden, the account suspended…) does not lift the block; the user's decision does. The last
  // status counts too (a contradiction seen before pins remembered it).
  const statuses = g.record.memberStatuses ?? {};
  const suspects = new Set(ctx.pins.contestedConfirmed());
  for (const [acct, status] of Object.entries(statuses)) if (status === "key-changed") suspects.add(acct);
  if (suspects.size === 0) return;
  const members = new Set([...Object.keys(statuses), ...Object.values(g.record.leaves).map((l) => l.acct)]);
  for (const acct of suspects) {
    if (acct === ctx.device.acct || !members.has(acct)) continue;
    if ((await ctx.pins.get(acct))?.oobVerified !== true) continue;
    throw new ClientError(
      "not_verified",
      `${acct}'s account key changed after you compared safety numbers with them: nothing was sent. ` +
        `Check with them by another channel, then accept the new key (mls-dm verify @${acct} ` +
        `--accept-new-key), or remove them from the group.`,
    );
  }
}
