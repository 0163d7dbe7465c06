import { ProtocolError, type DepartureResponse } from "@mastodon-mls/protocol";
import type { DeviceCertificate } from "@mastodon-mls/bridge";
import type { DeliveryContext } from "./context.js";
import { dropForgottenStretches } from "./inbox.js";
import { parseGroupId } from "./submit.js";

/**
 * POST /v1/groups/:groupId/departure (docs/protocol.md §6, decisions.md D17). A device cannot commit its
 * own removal, and anyone holding one of its KeyPackages can add it to groups; this is how it gets out of
 * one at the hub on its own: its membership ends here at once and the group stops counting against its
 * groups, while its leaf waits in the tree for a member's Remove. Safe to repeat: each step is idempotent,
 * and the index entry is settled on every call, so a retry after a crash between the two finishes the job.
 */
export async function depart(
  ctx: DeliveryContext,
  groupId: string,
  requester: DeviceCertificate,
): Promise<DepartureResponse> {
  parseGroupId(groupId);
  const device = requester.deviceIdText;
  await ctx.rateLimits.take("submissions", device);
  const number = await ctx.store.deviceGroupNumber(device, groupId);
  const outcome = await ctx.store.depart(groupId, device);
  if (!outcome.ok) throw new ProtocolError(outcome.reason);
  if (outcome.trimmed > 0) ctx.metrics.retained.inc({ cause: "ack" }, outcome.trimmed);
  await ctx.store.forgetDeviceGroup(device, groupId);
  if (number !== undefined) await dropForgottenStretches(ctx.store, device, number, outcome.forgotten);
  // Its open streams read again and stop tracking the group.
  ctx.notifier.publish({ kind: "devices", devices: [device] });
  ctx.metrics.departures.inc();
  if (outcome.leaf !== undefined) ctx.log.info({ group: groupId, leaf: outcome.leaf }, "device departed");
  return { departed: true, leaf: outcome.leaf ?? null };
}
