import { ProtocolError, type InboxItem } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { checkServiceUrl } from "../transport/serviceUrl.js";
import { noteBehindRetention, noteForkNotice, reportForks } from "./forks.js";
import { joinFromWelcome } from "./join.js";
import { markLeft, receiveGroupMessage } from "./receive.js";

/**
 * Processes one batch of a hub's inbox, in order, then records the cursor. Each item is durably processed
 * (group state, history) before the next; the cursor is saved and acknowledged only after all of them,
 * so a crash re-delivers the batch, and per-group sequence numbers make re-processing a no-op.
 */
export async function processInboxItems(
  ctx: DeviceContext,
  hub: string,
  items: InboxItem[],
  cursor: string,
): Promise<void> {
  for (const item of items) await processItem(ctx, hub, item);
  await ctx.saveCursor(hub, cursor);
  // A commit this device could not process is reported once the batch is on disk (never throws).
  await reportForks(ctx);
}

async function processItem(ctx: DeviceContext, hub: string, item: InboxItem): Promise<void> {
  switch (item.kind) {
    case "invitation": {
      let pointed: string;
      try {
        pointed = checkServiceUrl(item.hub);
      } catch (e) {
        const why = e instanceof ClientError ? e.message : String(e);
        ctx.emit({
          type: "error",
          groupId: item.group_id,
          operation: `invitation from ${item.from}`,
          message: why,
        });
        return;
      }
      if (ctx.groups.get(item.group_id)?.record.status === "active") return;
      await ctx.rememberHub(pointed);
      ctx.emit({ type: "invitation", groupId: item.group_id, hub: pointed, from: item.from });
      return;
    }
    case "welcome":
      await joinFromWelcome(ctx, hub, item);
      return;
    case "message": {
      const g = ctx.groups.get(item.group_id);
      // A hub speaks only for the groups it hosts: never let one inject messages into another's group.
      if (g === undefined || g.record.status !== "active" || g.record.hub !== hub) return;
      await receiveGroupMessage(ctx, g, {
        seq: item.seq,
        epoch: item.epoch,
        sender: item.sender,
        message: item.message,
      });
      return;
    }
    case "removed": {
      const g = ctx.groups.get(item.group_id);
      if (g === undefined || g.record.hub !== hub) return;
      await markLeft(ctx, g);
      return;
    }
    case "forked":
      await noteForkNotice(ctx, hub, item);
      return;
    case "behind_retention":
      await noteBehindRetention(ctx, hub, item.group_id, item.seq);
      return;
  }
}

/** Fetches and processes a hub's inbox until it has nothing more, acknowledging as it goes. */
export async function syncHubInbox(ctx: DeviceContext, hub: string): Promise<void> {
  const client = ctx.delivery(hub);
  let resetOnce = false;
  for (;;) {
    let page;
    try {
      page = await client.inbox(ctx.cursors.hubs[client.baseUrl] ?? undefined);
    } catch (e) {
      // The hub no longer knows our cursor (e.g. its store was rebuilt): resume from what it has as
      // acknowledged, which is never past what we processed durably; sequence numbers skip repeats.
      if (!(e instanceof ProtocolError && e.code === "invalid_cursor") || resetOnce) throw e;
      resetOnce = true;
      await ctx.clearCursor(client.baseUrl);
      continue;
    }
    await processInboxItems(ctx, client.baseUrl, page.items, page.cursor);
    if (page.items.length > 0) await client.ack(page.cursor);
    if (!page.more || page.items.length === 0) return;
  }
}
