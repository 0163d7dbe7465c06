import {
  clusterWorkerIndex,
  reportListening,
  startClusterPrimary,
  type Logger,
} from "@mastodon-mls/service-kit";
import type { DirectoryConfig } from "./config.js";
import { createDirectory, type DirectoryDeps } from "./directory.js";

export interface ServingDirectory {
  /** The URL it listens on (shared by every worker). */
  url: string;
  /** "single": this process serves; "primary": its workers do; "worker": one of them. */
  role: "single" | "primary" | "worker";
  /** Stops serving: a single process or a worker closes gracefully; a primary stops every worker so. */
  close(): Promise<void>;
  /** Settles when serving stopped by itself: rejects when the primary could not keep its workers up. */
  stopped: Promise<void>;
}

/**
 * `env` is the process's environment, read by the entry point: a cluster's worker finds its slot there.
 *
 * Serves the directory as WORKERS says: in this process, or (WORKERS > 1) as a node:cluster whose
 * primary forks WORKERS workers running the calling entry script again, each a whole directory on the
 * shared Redis. Only the first worker sweeps (README "Expiry"); `/metrics` of any worker reports them all.
 */
export async function serveDirectory(
  config: DirectoryConfig,
  log: Logger,
  opts: { env: Record<string, string | undefined>; deps?: DirectoryDeps },
): Promise<ServingDirectory> {
  const index = clusterWorkerIndex(opts.env);
  if (config.workers > 1 && index === undefined) {
    const primary = await startClusterPrimary({ workers: config.workers, log });
    return { url: primary.url, role: "primary", close: () => primary.close(), stopped: primary.stopped };
  }
  const worker = index !== undefined;
  // One sweeper is enough: the sweep is idempotent, but every worker walking every key is N times the work.
  const own = worker && index > 0 ? { ...config, sweepIntervalSeconds: 0 } : config;
  const directory = await createDirectory(own, { logger: log, ...opts.deps, clusterWorker: worker });
  const url = await directory.listen();
  if (worker) reportListening(url);
  return {
    url,
    role: worker ? "worker" : "single",
    close: () => directory.close(),
    stopped: new Promise<void>(() => undefined),
  };
}
