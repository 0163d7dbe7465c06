import { ProtocolError } from "@mastodon-mls/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeviceContext } from "../context.js";
import { SLOW_HUB_MS, syncAllHubs, syncHubInbox } from "./inbox.js";

// A hub read is resumed after a slow page (syncAllHubs), but the hub's cursor is still cleared at most
// once per sync: a hub whose later page is both slow and refused as invalid_cursor (replicas that do not
// share cursors, a broken hub) must end the sync with one `error` event, not reset and re-read forever
// inside the device's operation queue and lock. Found by a review of the change that added resuming.

/** One hub: page 0 (one item, more) at once; the page after "hub#0" refused as invalid_cursor after `lateMs`. */
function resettingHub(lateMs: number) {
  const processed: string[] = [];
  const events: { type: string; operation?: string }[] = [];
  const cursors = { hubs: {} as Record<string, string | null> };
  const ctx = {
    groups: new Map(),
    cursors,
    hubs: () => ["hub"],
    emit: (e: { type: string; operation?: string }) => events.push(e),
    delivery: (hub: string) => ({
      baseUrl: hub,
      inbox: (after?: string) =>
        after === undefined
          ? Promise.resolve({
              items: [{ kind: "message", group_id: "elsewhere", seq: 1, epoch: 0, sender: "x", message: "" }],
              cursor: `${hub}#0`,
              more: true,
            })
          : new Promise((_, reject) =>
              setTimeout(() => reject(new ProtocolError("invalid_cursor", "unknown cursor")), lateMs),
            ),
      ack: async () => ({ acked: true }),
    }),
    saveCursor: async (hub: string, cursor: string) => {
      processed.push(cursor);
      cursors.hubs[hub] = cursor;
    },
    clearCursor: async (hub: string) => {
      cursors.hubs[hub] = null;
    },
  } as unknown as DeviceContext;
  return { ctx, processed, events };
}

afterEach(() => vi.useRealTimers());

describe("an invalid_cursor on a late page", () => {
  it("syncHubInbox: one reset, then the error", async () => {
    vi.useFakeTimers();
    const { ctx, processed } = resettingHub(SLOW_HUB_MS + 1_000);
    const done = syncHubInbox(ctx, "hub").then(
      () => "resolved",
      (e: unknown) => (e instanceof ProtocolError ? e.code : "other"),
    );
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await done).toBe("invalid_cursor");
    expect(processed).toEqual(["hub#0", "hub#0"]);
  });

  it("syncAllHubs: one reset across resumed reads, then an error event and the end of the sync", async () => {
    vi.useFakeTimers();
    const { ctx, processed, events } = resettingHub(SLOW_HUB_MS + 1_000);
    let finished = false;
    const done = syncAllHubs(ctx).finally(() => (finished = true));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(processed).toEqual(["hub#0", "hub#0"]);
    expect(finished).toBe(true);
    expect(events).toEqual([expect.objectContaining({ type: "error", operation: "sync hub" })]);
    await done;
  });
});
