import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { InboxStream } from "./transport/inboxStream.js";
import type { InboxItem } from "@mastodon-mls/protocol";

export interface LiveFeedHooks {
  /** Processes a pushed batch under the device's serial queue (and runs the follow-up work). */
  processBatch(hub: string, items: InboxItem[], cursor: string): Promise<void>;
  /** Polls one hub over HTTP under the device's serial queue (the fallback). */
  poll(hub: string): Promise<void>;
}

export interface LiveOptions {
  signal?: AbortSignal;
  /** After this many failed connections in a row, a hub is polled over HTTP until its stream is back. */
  fallbackAfterFailures?: number;
  pollIntervalMs?: number;
}

/**
 * `events()`: a WebSocket stream per hub this device listens to, HTTP polling for hubs whose stream
 * keeps failing, new hubs picked up as invitations and joins arrive. Events come from the same
 * processing as `sync()`.
 */
export async function* liveEvents(
  ctx: DeviceContext,
  hooks: LiveFeedHooks,
  opts: LiveOptions,
): AsyncGenerator<DmEvent> {
  const fallbackAfter = opts.fallbackAfterFailures ?? 3;
  const pollMs = opts.pollIntervalMs ?? 5_000;
  const streams = new Map<string, InboxStream>();
  const pollers = new Map<string, NodeJS.Timeout>();
  let wake: (() => void) | undefined;
  const nudge = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = ctx.onEvent(nudge);
  opts.signal?.addEventListener("abort", nudge);

  const stopPolling = (hub: string) => {
    clearInterval(pollers.get(hub));
    pollers.delete(hub);
  };
  const startPolling = (hub: string) => {
    if (pollers.has(hub)) return;
    const tick = () => {
      hooks.poll(hub).catch((e: unknown) =>
        ctx.emit({
          type: "error",
          operation: `poll ${hub}`,
          message: e instanceof Error ? e.message : String(e),
        }),
      );
    };
    pollers.set(hub, setInterval(tick, pollMs));
    tick();
  };
  const ensureStreams = () => {
    for (const hub of ctx.hubs()) {
      if (streams.has(hub)) continue;
      const stream = new InboxStream({
        baseUrl: hub,
        signer: ctx.signer,
        after: () => ctx.cursors.hubs[hub] ?? undefined,
        reconnect: ctx.retry,
        onItems: async (items, cursor) => {
          await hooks.processBatch(hub, items, cursor);
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
      stream.start();
    }
  };

  try {
    ensureStreams();
    while (opts.signal?.aborted !== true) {
      for (const event of ctx.drainEvents()) yield event;
      ensureStreams();
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    unsubscribe();
    opts.signal?.removeEventListener("abort", nudge);
    for (const s of streams.values()) s.close();
    for (const hub of [...pollers.keys()]) stopPolling(hub);
  }
}
