import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ClientError } from "../errors.js";
import { createFileSync, readSmallFileSync } from "./atomicFile.js";

// One operation at a time per device directory, across processes: `mls-dm listen` in one terminal and
// `mls-dm send` in another must never both advance a group's state from the same copy (that would reuse
// a key generation). Each operation takes the `lock` file (O_EXCL), re-reads the directory when another
// process changed it, and removes the file when done. A lock left by a process that died (same host, pid
// gone) is broken. The lock file's few bytes are written and read with synchronous calls: every operation
// takes and releases it, and through the thread pool each of its five system calls costs a round trip
// (0.2–5 ms on a busy machine, measured with bench/client BENCH_TRACE) against microseconds on this thread.

export const LOCK_FILE = "lock";

export interface DeviceLock {
  release(): Promise<void>;
}

/** How long an operation waits by default for another process to release the directory. */
export const DEFAULT_LOCK_TIMEOUT_MS = 60_000;

export interface LockOptions {
  /** How long to wait for another process to finish. */
  timeoutMs: number;
}

interface LockContent {
  pid: number;
  host: string;
  token: string;
}

export async function acquireDeviceLock(dir: string, opts: LockOptions): Promise<DeviceLock> {
  const path = join(dir, LOCK_FILE);
  const mine: LockContent = { pid: process.pid, host: hostname(), token: randomBytes(12).toString("hex") };
  const text = JSON.stringify(mine);
  const deadline = Date.now() + opts.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      createFileSync(path, text);
      return {
        release: async () => {
          // Only our own lock: never one that another process took after breaking ours as stale.
          if (readText(path) === text) rmSync(path, { force: true });
        },
      };
    } catch (e) {
      if ((e as { code?: unknown }).code !== "EEXIST") throw e;
    }
    const held = readText(path);
    if (held === undefined) continue; // released meanwhile
    const holder = parseLock(held);
    if (holder !== undefined && holder.host === hostname() && !isAlive(holder.pid)) {
      // Left by a process that died. Re-read right before removing, so that a lock another process took
      // after breaking the same stale lock is not removed too.
      if (readText(path) === held) rmSync(path, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder === undefined ? "another process" : `another mls-dm process (pid ${holder.pid})`;
      throw new ClientError(
        "device_busy",
        `${who} is using the device directory ${dir}; wait for it to finish, or remove ${path} if no ` +
          "mls-dm process is running",
      );
    }
    await sleep(Math.min(20 * 2 ** Math.min(attempt, 4), 250));
  }
}

/** The lock if no other process holds it right now; undefined otherwise (never waits). */
export async function tryDeviceLock(dir: string): Promise<DeviceLock | undefined> {
  try {
    return await acquireDeviceLock(dir, { timeoutMs: 0 });
  } catch (e) {
    if (e instanceof ClientError && e.code === "device_busy") return undefined;
    throw e;
  }
}

function readText(path: string): string | undefined {
  return readSmallFileSync(path)?.toString("utf8");
}

function parseLock(text: string): LockContent | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockContent>;
    return typeof v.pid === "number" && typeof v.host === "string" && typeof v.token === "string"
      ? (v as LockContent)
      : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as { code?: unknown }).code === "EPERM";
  }
}
