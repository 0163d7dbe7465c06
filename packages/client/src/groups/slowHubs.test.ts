import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeviceContext } from "../context.js";
import { SLOW_HUB_MS, syncAllHubs } from "./inbox.js";

/**
 * A stand-in device context: each hub answers after `delayMs[hub]` (one number per page, the last
 * page's empty and final); each page's items are messages of a group this device is not in.
 */
function fakeCtx(delayMs: Record<string, number | number[]>) {
  const processed: string[] = [];
  const cursors = { hubs: {} as Record<string, string | null> };
  const delays = (hub: string) => [delayMs[hub]!].flat();
  const ctx = {
    groups: new Map(),
    cursors,
    readHubs: new Set<string>(),
    hubs: () => Object.keys(delayMs),
    emit: () => undefined,
    delivery: (hub: string) => ({
      baseUrl: hub,
      inbox: (after?: string) => {
        const page = after === undefined ? 0 : Number(after.split("#")[1]) + 1;
        const last = page === delays(hub).length - 1;
        const items = last
          ? []
          : [{ kind: "message", group_id: "elsewhere", seq: page + 1, epoch: 0, sender: "x", message: "" }];
        return new Promise((resolve) =>
          setTimeout(() => resolve({ items, cursor: `${hub}#${page}`, more: !last }), delays(hub)[page]),
        );
      },
      ack: async () => ({ acked: true }),
    }),
    saveCursor: async (hub: string, cursor: string) => {
      processed.push(cursor);
      cursors.hubs[hub] = cursor;
    },
  } as unknown as DeviceContext;
  return { ctx, processed };
}

afterEach(() => vi.useRealTimers());

describe("syncAllHubs with a slow first hub", () => {
  it("holds up the hubs that answered by SLOW_HUB_MS once, not once per hub", async () => {
    vi.useFakeTimers();
    const { ctx, processed } = fakeCtx({ slow: 60_000, h1: 0, h2: 0, h3: 0 });
    const done = syncAllHubs(ctx);
    await vi.advanceTimersByTimeAsync(SLOW_HUB_MS + 100);
    // Every hub that answered at once has been processed by now.
    expect(processed).toEqual(["h1#0", "h2#0", "h3#0"]);
    await vi.advanceTimersByTimeAsync(60_000);
    await done;
    expect(processed).toEqual(["h1#0", "h2#0", "h3#0", "slow#0"]);
  });
});

describe("syncAllHubs with a hub slow on a later page", () => {
  it("reads the hubs that answered while that page is late, then the rest of the slow hub", async () => {
    vi.useFakeTimers();
    const { ctx, processed } = fakeCtx({ paged: [0, 0, 60_000, 0], h1: [0, 0], h2: 0 });
    const done = syncAllHubs(ctx);
    await vi.advanceTimersByTimeAsync(SLOW_HUB_MS + 100);
    // paged's first two pages, then the others while its third is late.
    expect(processed).toEqual(["paged#0", "paged#1", "h1#0", "h1#1", "h2#0"]);
    await vi.advanceTimersByTimeAsync(60_000);
    await done;
    expect(processed).toEqual(["paged#0", "paged#1", "h1#0", "h1#1", "h2#0", "paged#2", "paged#3"]);
  });

  it("keeps the order when every page comes within SLOW_HUB_MS", async () => {
    vi.useFakeTimers();
    const { ctx, processed } = fakeCtx({ paged: [0, 500, 1_500, 0], h1: [0, 0], h2: 0 });
    const done = syncAllHubs(ctx);
    await vi.advanceTimersByTimeAsync(10_000);
    await done;
    expect(processed).toEqual(["paged#0", "paged#1", "paged#2", "paged#3", "h1#0", "h1#1", "h2#0"]);
  });
});
