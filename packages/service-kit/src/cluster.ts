import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, type Registry } from "prom-client";
import type { Logger } from "./logger.js";

// A service run as several processes on one port (node:cluster): the primary forks the workers, each a
// whole service with its own event loop, and hands each new connection to the next worker in turn. Node
// runs JavaScript on one core per process; this is how one host's other cores serve the same port.
// Everything a request depends on is in Redis (nonces, rate limits, data), so workers need nothing of
// one another; only metrics are gathered across them, so that a scrape sees the whole service.

const LISTENING = "mastodon-mls:listening";
const METRICS_REQUEST = "mastodon-mls:metrics-request";
const METRICS_ANSWER = "mastodon-mls:metrics";
/** Set by the primary in each worker's environment: its slot, 0 … workers − 1, kept across restarts. */
const WORKER_INDEX_ENV = "MASTODON_MLS_WORKER_INDEX";

/** Restarts of crashed workers allowed within a minute before the primary gives up and exits. */
const MAX_RESTARTS_PER_MINUTE = 5;

interface Message {
  type?: unknown;
  id?: unknown;
  url?: unknown;
  text?: unknown;
  error?: unknown;
}

export interface ClusterPrimaryOptions {
  workers: number;
  log: Logger;
}

export interface ClusterPrimary {
  /** The URL the workers listen on (they share it). */
  url: string;
  /** Stops every worker (each closes gracefully, as on SIGTERM) and waits until they exited. */
  close(): Promise<void>;
  /** Settles when the cluster stopped on its own: rejects when crashing workers could not be kept up. */
  stopped: Promise<void>;
}

/**
 * In the primary: forks `workers` workers running this same entry script, resolves once every one
 * listens, restarts a worker that dies (at most MAX_RESTARTS_PER_MINUTE a minute), and answers the
 * workers' metrics requests with every worker's metrics (see `clusterMetrics`). Rejects, after stopping
 * the others, if a worker exits before it listened: a start-up failure, as in a single process.
 */
export function startClusterPrimary(opts: ClusterPrimaryOptions): Promise<ClusterPrimary> {
  const { log } = opts;
  const aggregator = new AggregatorRegistry();
  const slots = new Map<Worker, number>();
  const restarts: number[] = [];
  let closing = false;
  let started = false;
  let stop: { resolve: () => void; reject: (e: Error) => void } | undefined;
  const stopped = new Promise<void>((resolve, reject) => {
    stop = { resolve, reject };
  });
  stopped.catch(() => undefined);

  const exitedAll = () =>
    new Promise<void>((resolve) => {
      if (slots.size === 0) resolve();
      else cluster.on("exit", () => slots.size === 0 && resolve());
    });
  const close = async (failure?: Error) => {
    closing = true;
    for (const worker of slots.keys()) worker.process.kill("SIGTERM");
    await exitedAll();
    if (failure) stop?.reject(failure);
    else stop?.resolve();
  };

  cluster.on("message", (worker, message: Message) => {
    if (message?.type !== METRICS_REQUEST) return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: METRICS_ANSWER, id: message.id, text }),
      (err: Error) => worker.send({ type: METRICS_ANSWER, id: message.id, error: err.message }),
    );
  });

  return new Promise((resolve, reject) => {
    const urls = new Map<number, string>();
    const fork = (index: number) => {
      const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
      slots.set(worker, index);
      worker.on("message", (message: Message) => {
        if (message?.type !== LISTENING || typeof message.url !== "string") return;
        urls.set(index, message.url);
        if (!started && urls.size === opts.workers) {
          started = true;
          resolve({ url: message.url, close: () => close(), stopped });
        }
      });
    };
    cluster.on("exit", (worker, code, signal) => {
      const index = slots.get(worker);
      slots.delete(worker);
      if (closing || index === undefined) return;
      if (!started) {
        log.error({ worker: index, code, signal }, "a worker exited while starting");
        void close();
        reject(new Error(`worker ${index} exited while starting (code ${code}, signal ${signal})`));
        return;
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts[0]! < now - 60_000) restarts.shift();
      if (restarts.length > MAX_RESTARTS_PER_MINUTE) {
        log.fatal({ worker: index, code, signal }, "workers keep exiting; stopping");
        void close(new Error("workers keep exiting"));
        return;
      }
      log.error({ worker: index, code, signal }, "a worker exited; starting another");
      fork(index);
    });
    for (let i = 0; i < opts.workers; i++) fork(i);
  });
}

/**
 * In a worker: its slot (0 … workers − 1), from the environment the primary forked it with (the entry
 * point passes its `process.env`); undefined outside a cluster.
 */
export function clusterWorkerIndex(env: Record<string, string | undefined>): number | undefined {
  if (!cluster.isWorker) return undefined;
  const index = Number(env[WORKER_INDEX_ENV]);
  return Number.isInteger(index) ? index : undefined;
}

/** In a worker: tells the primary this worker listens at `url`. */
export function reportListening(url: string): void {
  process.send?.({ type: LISTENING, url });
}

/**
 * In a worker: a source of the metrics text of every worker, summed by the primary (prom-client's
 * cluster aggregation: counters and histograms add up), in place of this worker's `registry` alone.
 */
export function clusterMetrics(registry: Registry, timeoutMs = 5_000): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs prom-client's answer to the primary's requests for this worker's metrics.
  new AggregatorRegistry();
  const pending = new Map<number, { resolve: (text: string) => void; reject: (e: Error) => void }>();
  let next = 0;
  process.on("message", (message: Message) => {
    if (message?.type !== METRICS_ANSWER || typeof message.id !== "number") return;
    const waiting = pending.get(message.id);
    pending.delete(message.id);
    if (typeof message.text === "string") waiting?.resolve(message.text);
    else waiting?.reject(new Error(`cluster metrics failed: ${String(message.error)}`));
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error("cluster metrics timed out"));
      }, timeoutMs);
      pending.set(id, {
        resolve: (text) => {
          clearTimeout(timer);
          resolve(text);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      process.send?.({ type: METRICS_REQUEST, id });
    });
}
