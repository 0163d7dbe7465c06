import { ProtocolError, type InboxItem, type InboxResponse } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";
import { ClientError, ServiceUnavailableError } from "../errors.js";
import { reachFor } from "../transport/publicReach.js";
import { checkRemoteServiceUrl, checkServiceUrl } from "../transport/serviceUrl.js";
import { limiter } from "../util/mapLimit.js";
import { blockedAccts } from "./blocking.js";
import { noteBehindRetention, noteForkNotice, reportForks } from "./forks.js";
import { joinFromWelcome } from "./join.js";
import { settleEchoAfterLeaving, settleOutbox } from "./outbox.js";
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
        // The device's own home and URLs the person configured are reached wherever they are (NET-7), also
        // when an invitation names them: only other hubs must be https at a public address.
        const base = checkServiceUrl(item.hub);
        const reach = reachFor(ctx.resolver, base, ctx.home.delivery.baseUrl);
        pointed = checkRemoteServiceUrl(base, reach === "any");
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
      // Blocked (groups/blocking.ts): its Welcome, if one comes, is declined; the hint is not followed.
      if (blockedAccts(ctx).has(item.from)) return;
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
      if (g === undefined || g.record.hub !== hub) return;
      if (g.record.status !== "active") {
        await settleEchoAfterLeaving(ctx, g, item);
        return;
      }
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

/** One page of a hub's inbox fetched ahead of processing (or why it could not be), and what it was asked after. */
export interface FetchedPage {
  hub: string;
  after: string | undefined;
  outcome: { page: InboxResponse } | { error: unknown };
}

/**
 * Asks a hub for the first page after this device's current cursor, without processing anything: no
 * state is read but the cursor, none is written. Never rejects; a failure is in `outcome`.
 */
export async function fetchInboxPage(ctx: DeviceContext, hub: string): Promise<FetchedPage> {
  let base = hub;
  let after: string | undefined;
  try {
    const client = ctx.delivery(hub);
    base = client.baseUrl;
    after = ctx.cursors.hubs[base] ?? undefined;
    return await fetchPageAfter(client, after);
  } catch (error) {
    return { hub: base, after, outcome: { error } };
  }
}

/** The page after `after`, asked for now; never rejects. */
async function fetchPageAfter(
  client: ReturnType<DeviceContext["delivery"]>,
  after: string | undefined,
): Promise<FetchedPage> {
  try {
    return { hub: client.baseUrl, after, outcome: { page: await client.inbox(after) } };
  } catch (error) {
    return { hub: client.baseUrl, after, outcome: { error } };
  }
}

/**
 * Fetches and processes a hub's inbox until it has nothing more, acknowledging as it goes. `first` is the
 * first page fetched ahead (`fetchInboxPage`): used when it was asked after the cursor this device still
 * holds, else fetched again. Each later page is asked for while the page before is processed (after that
 * page's cursor, which processing it saves), so a device catching up waits for no round trip between pages.
 */
export async function syncHubInbox(
  ctx: DeviceContext,
  hub: string,
  first?: Promise<FetchedPage>,
): Promise<void> {
  await readHubInbox(ctx, hub, first);
}

/**
 * `syncHubInbox`; with `yieldAfterMs`, a later page that has not come that long after the page before
 * was processed is not waited for: its request is returned, still running, for the caller to hand back
 * as `first` once it answered (syncAllHubs reads other hubs meanwhile). Undefined when the hub has
 * nothing more.
 */
async function readHubInbox(
  ctx: DeviceContext,
  hub: string,
  first: Promise<FetchedPage> | undefined,
  yieldAfterMs?: number,
  /** Whether the cursor was cleared already, by this read or by one it resumes (only once per read). */
  reset = { done: false },
): Promise<{ later: Promise<FetchedPage> } | undefined> {
  const client = ctx.delivery(hub);
  let ahead = first;
  for (let page = 0; ; page++) {
    if (page > 0 && ahead !== undefined && yieldAfterMs !== undefined) {
      const later = ahead;
      if (!(await within(later, yieldAfterMs))) return { later };
    }
    const after = ctx.cursors.hubs[client.baseUrl] ?? undefined;
    let answer;
    try {
      const fetched = ahead === undefined ? undefined : await ahead;
      ahead = undefined;
      if (fetched !== undefined && fetched.hub === client.baseUrl && fetched.after === after) {
        if ("error" in fetched.outcome) throw fetched.outcome.error;
        answer = fetched.outcome.page;
      } else {
        answer = await client.inbox(after);
      }
    } catch (e) {
      // The hub no longer knows our cursor (e.g. its store was rebuilt): resume from what it has as
      // acknowledged, which is never past what we processed durably; sequence numbers skip repeats.
      if (!(e instanceof ProtocolError && e.code === "invalid_cursor") || reset.done) throw e;
      reset.done = true;
      await ctx.clearCursor(client.baseUrl);
      continue;
    }
    // A hub whose pages never end (its cursor stands still, or it always has more) would hold this sync,
    // and the device's lock, for ever: what is left is read by the next one.
    if (answer.more && answer.items.length > 0 && answer.cursor === after) {
      throw new ServiceUnavailableError(
        "delivery service",
        client.baseUrl,
        "it answered the same cursor again with more to come (reading stopped)",
      );
    }
    const more = answer.more && answer.items.length > 0 && page + 1 < MAX_PAGES_PER_READ;
    if (more) ahead = fetchPageAfter(client, answer.cursor);
    await processInboxItems(ctx, client.baseUrl, answer.items, answer.cursor);
    if (answer.items.length > 0) await client.ack(answer.cursor);
    if (!answer.more || answer.items.length === 0) {
      // Everything the hub accepted up to now has been read: what an own message's echo did not settle.
      await settleOutbox(ctx, client.baseUrl);
      ctx.readHubs.add(client.baseUrl);
      return undefined;
    }
    if (!more) {
      ctx.emit({
        type: "error",
        operation: `sync ${client.baseUrl}`,
        message: `stopped after ${MAX_PAGES_PER_READ} pages; the rest is read by the next sync`,
      });
      return undefined;
    }
  }
}

/** The most pages one read of a hub takes (100 items each at most): a hub whose pages never end stops here. */
export const MAX_PAGES_PER_READ = 1_000;

/** How many hubs `syncAllHubs` asks at once. */
export const HUB_FETCH_CONCURRENCY = 8;
/** How long `syncAllHubs` waits for the next hub in its order before it processes hubs that answered. */
export const SLOW_HUB_MS = 2_000;

/**
 * `sync()`'s reading: every hub this device listens to is asked for its first page at once (at most
 * `concurrency` requests in flight), and the answers are processed one hub after the other, in the order
 * of `ctx.hubs()`, each hub to its last page before the next — the device's state is one serial context,
 * and while hubs answer within `SLOW_HUB_MS` the order (hence the events) does not depend on which hub
 * answered first. A hub that keeps the next place in that order waiting longer, for its first page or a
 * later one, lets the hubs that have answered go first, in the same order, so one slow hub holds up
 * nobody else for more than that; its next page is processed once it comes. Hubs that processing
 * brings in (an invitation naming a new hub) are read in a further round of the same call. A hub that
 * cannot be reached or refuses gives an `error` event and keeps no other hub from being read; any other
 * failure (the local disk, a bug) propagates.
 */
export async function syncAllHubs(ctx: DeviceContext, concurrency = HUB_FETCH_CONCURRENCY): Promise<void> {
  const limit = limiter(concurrency);
  const done = new Set<string>();
  for (;;) {
    const next = ctx.hubs().filter((h) => !done.has(h));
    if (next.length === 0) return;
    for (const hub of next) done.add(hub);
    const ahead = new Map(next.map((hub) => [hub, limit(() => fetchInboxPage(ctx, hub))]));
    const answered = new Set<string>();
    // Registered first, so that whoever awaits one of these sees it marked (fetchInboxPage never rejects).
    for (const [hub, page] of ahead) void page.then(() => answered.add(hub));
    const waiting = [...next];
    const slow = new Set<string>();
    // One cursor reset per hub and sync, also across the reads of a hub resumed after a slow page.
    const resets = new Map(next.map((hub) => [hub, { done: false }]));
    while (waiting.length > 0) {
      const first = waiting[0]!;
      if (!answered.has(first)) {
        // Each hub is waited for SLOW_HUB_MS once: not again before each hub that answered meanwhile.
        if (!slow.has(first)) await within(ahead.get(first)!, SLOW_HUB_MS);
        if (!answered.has(first)) {
          slow.add(first);
          await Promise.race(waiting.map((h) => ahead.get(h)!));
        }
      }
      const hub = answered.has(first) ? first : waiting.find((h) => answered.has(h))!;
      waiting.splice(waiting.indexOf(hub), 1);
      try {
        const unfinished = await readHubInbox(ctx, hub, ahead.get(hub), SLOW_HUB_MS, resets.get(hub));
        if (unfinished !== undefined) {
          // Its next page is slow: the hubs that answered go first; it is read on when the page comes.
          answered.delete(hub);
          slow.add(hub);
          ahead.set(hub, unfinished.later);
          void unfinished.later.then(() => answered.add(hub));
          waiting.unshift(hub);
        }
      } catch (e) {
        if (!(e instanceof ServiceUnavailableError || e instanceof ProtocolError)) throw e;
        ctx.emit({ type: "error", operation: `sync ${hub}`, message: e.message });
      }
    }
  }
}

/** Waits for `p`, or `ms`, whichever comes first: true when `p` settled in time. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
