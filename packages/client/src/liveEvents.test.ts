import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { liveEvents, type LiveFeedHooks } from "./liveEvents.js";

// The follow-up timer's scheduling on its own: a device context reduced to what `hasOutstandingWork` and
// the live loop read (no hubs, so no streams and no I/O at all), and fake timers to move time.

const INTERVAL = 30_000;

/**
 * A device context reduced to what the live loop reads, whose only outstanding work is `outstanding()`,
 * and the client's `op` over it (runs the work, then tells the listeners).
 */
function fakeContext(outstanding: () => unknown[]) {
  const queued: DmEvent[] = [];
  const listeners = new Set<() => void>();
  const ctx = {
    // Outstanding work of any kind (here: a KeyPackage used, to be replaced).
    get keyPackageUsed() {
      return outstanding().length > 0;
    },
    proposalHolds: new Map<string, number>(),
    device: { lastResort: { used: false }, keyPackagesCheckedAt: 0, createdAt: 0 },
    groups: new Map(),
    nowSeconds: () => 0,
    hubs: () => [],
    emit(e: DmEvent) {
      queued.push(e);
      for (const l of listeners) l();
    },
    drainEvents: () => queued.splice(0),
    onEvent(l: () => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const afterOp = new Set<() => void>();
  const op = async (work: () => void | Promise<void>) => {
    try {
      await work();
    } finally {
      for (const l of afterOp) l();
    }
  };
  const onOperation = (l: () => void) => {
    afterOp.add(l);
    return () => afterOp.delete(l);
  };
  return { ctx, op, onOperation, listeners: () => afterOp.size };
}

/** A context whose only outstanding work is `work` (e.g. a change to retry), and the hooks over it. */
function setUp() {
  const work: unknown[] = [];
  const { ctx, op, onOperation, listeners } = fakeContext(() => work);
  const runs: number[] = [];
  let fails = 0;
  const hooks: LiveFeedHooks = {
    processBatch: () => Promise.resolve(),
    poll: () => Promise.resolve(),
    followUp: () =>
      op(() => {
        runs.push(performance.now());
        if (fails > 0) {
          fails--;
          ctx.emit({ type: "error", operation: "retry add after losing the epoch", message: "hub down" });
          return;
        }
        work.splice(0);
      }),
    onOperation,
  };
  return {
    ctx,
    work,
    hooks,
    op,
    runs,
    failNext(n: number) {
      fails = n;
    },
    listeners,
  };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "performance"] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("the follow-up timer", () => {
  it("exists only while work is outstanding, runs it every interval until done, and ends with the iterator", async () => {
    const t = setUp();
    const controller = new AbortController();
    const events = liveEvents(t.ctx as unknown as DeviceContext, t.hooks, {
      signal: controller.signal,
      followUpIntervalMs: INTERVAL,
    });
    const first = events.next();
    await vi.advanceTimersByTimeAsync(0);
    // Nothing outstanding: no timer at all, however long it stays quiet.
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10 * INTERVAL);
    expect(t.runs).toEqual([]);

    // An operation leaves work behind (a change that lost its epoch): a timer, the interval after the last
    // follow-up; it fails twice (an error event each time), then succeeds; then no timer again.
    const start = performance.now();
    await t.op(() => {
      t.work.push({});
    });
    expect(vi.getTimerCount()).toBe(1);
    t.failNext(2);
    await vi.advanceTimersByTimeAsync(INTERVAL - 1);
    expect(t.runs).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.runs).toEqual([start + INTERVAL]);
    expect(await first).toMatchObject({ value: { type: "error", message: "hub down" } });
    await vi.advanceTimersByTimeAsync(2 * INTERVAL);
    expect(t.runs).toEqual([start + INTERVAL, start + 2 * INTERVAL, start + 3 * INTERVAL]);
    expect(t.work).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10 * INTERVAL);
    expect(t.runs).toHaveLength(3);

    // Work outstanding when the iterator ends: the timer goes with it.
    await t.op(() => {
      t.work.push({});
    });
    expect(vi.getTimerCount()).toBe(1);
    // The second failure's event was queued while the consumer held the first: it still comes.
    expect(await events.next()).toMatchObject({ value: { type: "error", message: "hub down" } });
    controller.abort();
    expect(await events.next()).toEqual({ done: true, value: undefined });
    expect(vi.getTimerCount()).toBe(0);
    expect(t.listeners()).toBe(0);
    await vi.advanceTimersByTimeAsync(10 * INTERVAL);
    expect(t.runs).toHaveLength(3);
  });
});

// Two groups with a leave each (one member leaving both). followUp() looks at the groups in order: g2
// first, whose wait has not ended yet, then g1, whose wait has ended and whose commit takes 500 ms; g2's
// wait ends during that commit. It must be acted on when that run ends, not at the next interval (30 s,
// past DESIGN §9's "within 30 s"). Found by a review.
describe("proposal waits (groups/followUp.ts)", () => {
  it("a wait that ends while the follow-up commits another group is acted on at its end", async () => {
    const toCommit = new Set<string>();
    const { ctx, op, onOperation } = fakeContext(() => [...toCommit]);
    const committedAt = new Map<string, number>();
    // As followUp(): per group in order, commit once its wait is over; a commit takes 500 ms.
    const followUp = async () => {
      for (const g of ["g2", "g1"]) {
        if (!toCommit.has(g) || performance.now() < ctx.proposalHolds.get(g)!) continue;
        await new Promise((r) => setTimeout(r, 500));
        toCommit.delete(g);
        committedAt.set(g, performance.now());
      }
    };
    const hooks: LiveFeedHooks = {
      processBatch: () => Promise.resolve(),
      poll: () => Promise.resolve(),
      followUp: () => op(followUp),
      onOperation,
    };
    const controller = new AbortController();
    const live = liveEvents(ctx as unknown as DeviceContext, hooks, { signal: controller.signal });
    const running = live.next();
    await vi.advanceTimersByTimeAsync(1);
    const start = performance.now();
    // A batch brings both leaves: waits of 1 000 ms (g1) and 1 200 ms (g2) start.
    await op(() => {
      toCommit.add("g1").add("g2");
      ctx.proposalHolds.set("g1", start + 1_000);
      ctx.proposalHolds.set("g2", start + 1_200);
    });
    await vi.advanceTimersByTimeAsync(10_000);
    controller.abort();
    await vi.advanceTimersByTimeAsync(1);
    await running;
    expect(committedAt.get("g1")! - start).toBeLessThan(2_000);
    expect(committedAt.get("g2")! - start).toBeLessThan(5_000);
  });
});
