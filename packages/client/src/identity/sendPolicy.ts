import type { DeviceContext, GroupHandle } from "../context.js";
import { ClientError } from "../errors.js";
import { leavesOf } from "../mls/leaves.js";

/**
 * DESIGN §3: after comparing safety numbers with someone, a change of their account key must stop this
 * device from writing to them until the person decides — the new key may be an impersonator's. A member
 * account found `key-changed` once whose pin was confirmed out of band blocks sending to the group;
 * `acceptNewKey` (a new pin, not confirmed), confirming the safety number again, or removing them lifts it.
 */
export async function assertNoBrokenVerification(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  // The pin remembers the contradiction (keyChangedAt): a later lookup that says something else (the
  // proof hidden, the account suspended…) does not lift the block; the user's decision does.
  const accts = new Set(Object.keys(g.record.memberStatuses ?? {}));
  if (g.state !== undefined) for (const l of leavesOf(g.state.ratchetTree)) accts.add(l.acct);
  for (const acct of accts) {
    if (acct === ctx.device.acct) continue;
    const pin = await ctx.pins.get(acct);
    const contested = pin?.keyChangedAt !== undefined || g.record.memberStatuses?.[acct] === "key-changed";
    if (!contested || pin?.oobVerified !== true) continue;
    throw new ClientError(
      "not_verified",
      `${acct}'s account key changed after you compared safety numbers with them: nothing was sent. ` +
        `Check with them by another channel, then accept the new key (mls-dm verify @${acct} ` +
        `--accept-new-key), or remove them from the group.`,
    );
  }
}
