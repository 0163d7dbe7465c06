import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeviceContext } from "../context.js";
import { SLOW_HUB_MS, syncAllHubs } from "./inbox.js";

/** A stand-in device context: hubs answer an empty last page after `delayMs[hub]`. */
function fakeCtx(delayMs: Record<string, number>) {
  const processed: string[] = [];
  const cursors = { hubs: {} as Record<string, string | null> };
  const ctx = {
    groups: new Map(),
    cursors,
    hubs: () => Object.keys(delayMs),
    emit: () => undefined,
    delivery: (hub: string) => ({
      baseUrl: hub,
      inbox: () =>
        new Promise((resolve) =>
          setTimeout(() => resolve({ items: [], cursor: `${hub}-c`, more: false }), delayMs[hub]),
        ),
      ack: async () => ({ acked: true }),
    }),
    saveCursor: async (hub: string, cursor: string) => {
      processed.push(hub);
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
    expect(processed).toEqual(["h1", "h2", "h3"]);
    await vi.advanceTimersByTimeAsync(60_000);
    await done;
    expect(processed).toEqual(["h1", "h2", "h3", "slow"]);
  });
});
