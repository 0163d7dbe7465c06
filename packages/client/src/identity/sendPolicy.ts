import type { DeviceContext, GroupHandle } from "../context.js";
import { ClientError } from "../errors.js";

/**
 * DESIGN §3: after comparing safety numbers with someone, a change of their account key must stop this
 * device from writing to them until the person decides — the new key may be an impersonator's. A member
 * account last found `key-changed` whose pin was confirmed out of band blocks sending to the group;
 * `acceptNewKey` (a new pin, not confirmed) or removing them lifts it.
 */
export async function assertNoBrokenVerification(ctx: DeviceContext, g: GroupHandle): Promise<void> {
  for (const [acct, status] of Object.entries(g.record.memberStatuses ?? {})) {
    if (status !== "key-changed") continue;
    if ((await ctx.pins.get(acct))?.oobVerified !== true) continue;
    throw new ClientError(
      "not_verified",
      `${acct}'s account key changed after you compared safety numbers with them: nothing was sent. ` +
        `Check with them by another channel, then accept the new key (mls-dm verify @${acct} ` +
        `--accept-new-key), or remove them from the group.`,
    );
  }
}
