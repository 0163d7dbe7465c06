import type { DeliveryContext } from "./context.js";
import { ACCOUNT_STREAM, type Cursor } from "./cursor.js";
import { ackCursor, type DeliveredStreams, type InboxReader } from "./inbox.js";

// An acknowledgement, as POST /v1/inbox/ack and the stream's `ack` frame both take it: the device's
// positions, each group's record of them (which deletes log entries), then the account's invitations.
//
// An invitation is the account's, not one device's: it goes once every device the instance's directory
// lists for the account has acknowledged it (docs/decisions.md D16). Each device's position is in its own
// cursor (its own Redis hash slot, apart from the account's queue), so they are read one by one here and
// the deletion is one step in the account's slot. No lock spans the two, and none is needed:
// - positions only rise, and each was checked against the queue when it was acknowledged (never past the
//   last invitation queued then), so the lowest of them is read by every listed device, and an invitation
//   queued meanwhile lies above it;
// - of two devices acknowledging at once, each reads the other's cursor after writing its own, so at least
//   one sees both; the other deletes less or nothing (trimInvitations never moves back);
// - a device the directory does not list is not counted (its position can delete nothing) and cannot
//   acknowledge an account's stream at all (deviceAccess.ts); a listed device that never read counts as 0;
// - the answer is the cached one (DIRECTORY_CACHE_SECONDS): a device revoked since only holds deletion
//   back; a device registered since is not counted until the next answer, so its account's other devices
//   reading an invitation in that window may delete it before it sees it. That costs nothing the new
//   device needs: an invitation is a hint, the devices that read it join the group and add their
//   account's listed devices to it (DESIGN §3), and the Welcome waits at the hub.

/**
 * Acknowledges `cursor` for the reader (inbox.ts ackCursor), counts what retention deleted, and, when the
 * cursor names a position in the account stream, deletes the invitations all the account's listed devices
 * have read (a repeat deletes nothing more). That last step never fails the acknowledgement, which is
 * stored by then: a failure is logged, and the next acknowledgement in the account stream (or age) deletes
 * what it left.
 */
export async function acknowledge(
  ctx: DeliveryContext,
  reader: InboxReader,
  cursor: Cursor,
  delivered?: DeliveredStreams,
): Promise<void> {
  const { trimmed, forgot } = await ackCursor(ctx.store, reader, cursor, delivered);
  if (trimmed > 0) ctx.metrics.retained.inc({ cause: "ack" }, trimmed);
  if (forgot) ctx.notifier.publish({ kind: "devices", devices: [reader.device] });
  // Only here: acknowledgements of group streams alone, the bulk of them, cost nothing more.
  if (reader.acct !== undefined && (cursor.get(ACCOUNT_STREAM) ?? 0) > 0) {
    await deleteReadInvitations(ctx, reader.acct);
  }
}

async function deleteReadInvitations(ctx: DeliveryContext, acct: string): Promise<void> {
  try {
    const upTo = await readByAll(ctx, acct);
    if (upTo === 0) return;
    const deleted = await ctx.store.trimInvitations(acct, upTo);
    if (deleted > 0) ctx.metrics.invitationsDeleted.inc({ cause: "ack" }, deleted);
  } catch (e) {
    ctx.log.warn(
      { acct, err: e instanceof Error ? e.message : String(e) },
      "retention: deleting read invitations failed",
    );
  }
}

/** The lowest account-stream position among the devices the directory lists for `acct` (none: 0). */
async function readByAll(ctx: DeliveryContext, acct: string): Promise<number> {
  if (!ctx.directory) return 0;
  const { devices } = await ctx.directory.devices(acct);
  if (devices.size === 0) return 0;
  const positions = await Promise.all(
    [...devices.keys()].map(async (device) => (await ctx.store.cursor(device)).get(ACCOUNT_STREAM) ?? 0),
  );
  return Math.min(...positions);
}
