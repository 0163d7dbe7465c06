import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { hasOutstandingWork, nextProposalHold } from "./groups/followUp.js";
import { InboxStream } from "./transport/inboxStream.js";
import type { InboxItem } from "@mastodon-mls/protocol";

export interface LiveFeedHooks {
  /** Processes a pushed batch under the device's serial queue (and runs the follow-up work). */
  processBatch(hub: string, items: InboxItem[], cursor: string): Promise<void>;
  /** Polls one hub over HTTP under the device's serial queue (the fallback), and runs the follow-up work. */
  poll(hub: string): Promise<void>;
  /** Runs the follow-up work under the device's serial queue, if there still is any. */
  followUp(): Promise<void>;
  /** Calls `listener` after every operation of the device (this process); returns the unsubscribe function. */
  onOperation(listener: () => void): () => void;
}

export interface LiveOptions {
  signal?: AbortSignal;
  /** After this many failed connections in a row, a hub is polled over HTTP until its stream is back. */
  fallbackAfterFailures?: number;
  pollIntervalMs?: number;
  /**
   * While follow-up work is outstanding (a commit whose outcome is unknown, proposals to commit, a
   * self-update, invitations, … that failed), it is run again at most this often even if nothing arrives.
   * Default 30 000 (DESIGN §9: proposals are committed within 30 s).
   */
  followUpIntervalMs?: number;
  /**
   * How long to wait before committing proposals received (a member's `leave`), drawn for each group
   * when they first arrive. Default: at random up to 3 s (`PROPOSAL_HOLD_MAX_MS`), so that the members
   * listening do not all build a commit at once (DESIGN §9 allows 30 s).
   */
  proposalHoldMs?: () => number;
}

/**
 * `events()`: a WebSocket stream per hub this device listens to, HTTP polling for hubs whose stream
 * keeps failing, new hubs picked up as invitations and joins arrive. Events come from the same
 * processing as `sync()`. The follow-up work runs after each batch; when it is left unfinished (a hub
 * refused for a moment), a timer runs it again every `followUpIntervalMs` until nothing is outstanding —
 * a quiet group may bring no batch for a long time. No timer while nothing is outstanding; none outlives
 * the iterator, and none keeps the process alive.
 */
export async function* liveEvents(
  ctx: DeviceContext,
  hooks: LiveFeedHooks,
  opts: LiveOptions,
): AsyncGenerator<DmEvent> {
  const fallbackAfter = opts.fallbackAfterFailures ?? 3;
  const pollMs = opts.pollIntervalMs ?? 5_000;
  const followUpMs = opts.followUpIntervalMs ?? 30_000;
  const streams = new Map<string, InboxStream>();
  const pollers = new Map<string, NodeJS.Timeout>();
  let wake: (() => void) | undefined;
  const nudge = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = ctx.onEvent(nudge);

  // The follow-up timer. `lastFollowUp`: when the follow-up work last ran (after a batch, a poll, or
  // the timer); the timer never runs it sooner than `followUpMs` after that.
  let ended = false;
  let lastFollowUp = performance.now();
  let followUpTimer: NodeJS.Timeout | undefined;
  /** When (performance.now()) the timer fires, and whether for proposals whose wait ends then. */
  let followUpDue = 0;
  let followUpForHold = false;
  let followUpRunning = false;
  /** When the timer's follow-up last started: waits that ended before it were seen ended by it. */
  let followUpStarted = performance.now();
  const stopFollowUpTimer = () => {
    clearTimeout(followUpTimer);
    followUpTimer = undefined;
  };
  const outstanding = () => {
    try {
      return hasOutstandingWork(ctx);
    } catch (e) {
      // Called from timers and after operations: a throw here would be an unhandled rejection.
      ctx.emit({
        type: "error",
        operation: "follow-up work",
        message: e instanceof Error ? e.message : String(e),
      });
      return false;
    }
  };
  const scheduleFollowUp = (delay = followUpMs) => {
    if (ended || followUpRunning) return;
    if (!outstanding()) {
      stopFollowUpTimer();
      return;
    }
    // Proposals waiting for their moment (groups/followUp.ts) are committed then, not at the interval.
    const hold = nextProposalHold(ctx, followUpStarted);
    const wait = hold === undefined ? delay : Math.min(delay, hold);
    const due = performance.now() + wait;
    if (followUpTimer !== undefined && followUpDue <= due) return;
    stopFollowUpTimer();
    followUpDue = due;
    followUpForHold = wait < delay;
    followUpTimer = setTimeout(runFollowUp, wait);
    followUpTimer.unref();
  };
  const runFollowUp = () => {
    followUpTimer = undefined;
    if (ended) return;
    // A batch ran it meanwhile: wait for the rest of the interval (or stop, if it left nothing), unless
    // this is the end of proposals' wait.
    const rest = lastFollowUp + followUpMs - performance.now();
    if (rest > 0 && !followUpForHold) {
      scheduleFollowUp(rest);
      return;
    }
    followUpRunning = true;
    followUpStarted = performance.now();
    hooks
      .followUp()
      .catch((e: unknown) =>
        ctx.emit({
          type: "error",
          operation: "follow-up work",
          message: e instanceof Error ? e.message : String(e),
        }),
      )
      .finally(() => {
        followUpRunning = false;
        lastFollowUp = performance.now();
        scheduleFollowUp();
      });
  };
  const unsubscribeOps = hooks.onOperation(() => scheduleFollowUp());
  const onAbort = () => {
    ended = true;
    stopFollowUpTimer();
    nudge();
  };
  opts.signal?.addEventListener("abort", onAbort);

  /** Hubs whose last poll failed: told once per outage, not at every poll (every 5 s while it lasts). */
  const failingPolls = new Set<string>();
  const stopPolling = (hub: string) => {
    clearInterval(pollers.get(hub));
    pollers.delete(hub);
    // Its stream is back: the next outage is a new one.
    failingPolls.delete(hub);
  };
  /** One HTTP read of `hub` (never rejects: a failure is an `error` event, the first of an outage). */
  const pollOnce = (hub: string): Promise<void> =>
    hooks.poll(hub).then(
      () => {
        failingPolls.delete(hub);
        lastFollowUp = performance.now();
      },
      (e: unknown) => {
        if (failingPolls.has(hub)) return;
        failingPolls.add(hub);
        ctx.emit({
          type: "error",
          operation: `poll ${hub}`,
          message:
            `${e instanceof Error ? e.message : String(e)} (tried again every ${pollMs / 1000} s; ` +
            "said again only after it has answered)",
        });
      },
    );
  const startPolling = (hub: string) => {
    if (pollers.has(hub)) return;
    const tick = () => void pollOnce(hub);
    pollers.set(hub, setInterval(tick, pollMs));
    tick();
  };
  const ensureStreams = () => {
    for (const hub of ctx.hubs()) {
      if (streams.has(hub)) continue;
      const stream = new InboxStream({
        baseUrl: hub,
        reach: ctx.delivery(hub).http.reach,
        signer: ctx.signer,
        after: () => ctx.cursors.hubs[hub] ?? undefined,
        reconnect: ctx.retry,
        // A read over HTTP resets a cursor the hub no longer knows, and catches up meanwhile.
        onCursorRefused: () => pollOnce(hub),
        onItems: async (items, cursor) => {
          await hooks.processBatch(hub, items, cursor);
          lastFollowUp = performance.now();
          nudge();
        },
        onStatus: (s) => {
          if (s.kind === "ready") stopPolling(hub);
          if (s.kind === "disconnected" && s.failures >= fallbackAfter) startPolling(hub);
          if (s.kind === "refused") {
            stopPolling(hub);
            ctx.emit({
              type: "error",
              operation: `listen to ${hub}`,
              message: `${s.reason}. This device is no longer registered for its account (revoked?): set it up again or link it anew.`,
            });
          }
        },
      });
      streams.set(hub, stream);
      ctx.streamSubmitters.set(hub, stream);
      stream.start();
    }
  };

  try {
    ensureStreams();
    while (opts.signal?.aborted !== true) {
      // Events queued while the consumer held the last one woke nobody: drain until none is left.
      const ready = ctx.drainEvents();
      if (ready.length > 0) {
        for (const event of ready) yield event;
        continue;
      }
      ensureStreams();
      scheduleFollowUp();
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    ended = true;
    stopFollowUpTimer();
    unsubscribeOps();
    unsubscribe();
    opts.signal?.removeEventListener("abort", onAbort);
    for (const [hub, s] of streams) {
      if (ctx.streamSubmitters.get(hub) === s) ctx.streamSubmitters.delete(hub);
      s.close();
    }
    for (const hub of [...pollers.keys()]) stopPolling(hub);
  }
}
