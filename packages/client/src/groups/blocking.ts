import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { canonicalAccts } from "./changes.js";

// Accounts whose groups this device declines (docs/decisions.md D17). Anyone who can claim a device's
// KeyPackages can add it to groups, and after the device leaves one at the hub (a departure) he can
// remove its old leaf and add it again. A blocked account's groups are declined on arrival: the Welcome
// is processed (only the tree it carries says who is in the group), nothing is proposed or sent, the keys
// are dropped and the group is left at its hub by the follow-up work, so the place it took is freed again
// at the device's next read. Invitations naming a blocked sender are dropped too (a hint only: their
// `from` is not authenticated, so this hides nothing a blocked account could not spoof anyway).

/** At most this many accounts are blocked. */
export const MAX_BLOCKED = 1000;

export function blockedAccts(ctx: DeviceContext): ReadonlySet<string> {
  return new Set(ctx.device.blocked ?? []);
}

/** Adds accounts to the list (canonical `user@domain`); returns those newly blocked. */
export async function block(ctx: DeviceContext, accts: string[]): Promise<string[]> {
  const wanted = canonicalAccts(accts);
  if (wanted.includes(ctx.device.acct)) {
    throw new ClientError(
      "bad_input",
      `${ctx.device.acct} is this device's own account: it cannot be blocked`,
    );
  }
  const list = ctx.device.blocked ?? [];
  const added = wanted.filter((a) => !list.includes(a));
  if (added.length === 0) return [];
  if (list.length + added.length > MAX_BLOCKED) {
    throw new ClientError("bad_input", `at most ${MAX_BLOCKED} accounts can be blocked`);
  }
  ctx.device.blocked = [...list, ...added];
  await ctx.saveDevice();
  return added;
}

/** Takes accounts off the list; returns those that were on it. */
export async function unblock(ctx: DeviceContext, accts: string[]): Promise<string[]> {
  const gone = new Set(canonicalAccts(accts));
  const list = ctx.device.blocked ?? [];
  const removed = list.filter((a) => gone.has(a));
  if (removed.length === 0) return [];
  ctx.device.blocked = list.filter((a) => !gone.has(a));
  await ctx.saveDevice();
  return removed;
}
