// Where the client's time goes besides computing, measured from the outside of the library.
//
// - Network: the client reaches our services (transport/http.ts) and looks accounts up (the bridge's
//   safe HTTP GET: WebFinger, accounts/lookup, instance) through the bridge's `exchange`, that is through
//   node:http's and node:https's `request`, which are wrapped: a request is an interval from the call to
//   the last byte of the answer. The services run in another process, so an interval is the loopback
//   round trip plus the service's own work, during which this process waits.
// - Disk: node:fs/promises (and FileHandle's methods), which the client's store uses for every file,
//   are wrapped the same way (module.syncBuiltinESMExports makes the wrappers visible to modules that
//   imported the functions by name). An interval is the wait for the thread pool: writing, fsync,
//   rename, reading. Encryption and encoding happen before the write and are not in it. The lock file,
//   the key check and the generation marker (a few bytes each) are read and written with synchronous
//   calls (store/lock.ts, atomicFile.ts): they count as CPU, not disk wait.
//
// Overlapping intervals count once: each figure is the union of the intervals of its kinds.
import fsp from "node:fs/promises";
import http, { type ClientRequest, type IncomingMessage } from "node:http";
import https from "node:https";
import { syncBuiltinESMExports } from "node:module";

export type Kind = "service" | "identity" | "disk";

interface Interval {
  start: number;
  end: number;
  kind: Kind;
  label: string;
  /** Bytes handed to a write. */
  bytes: number;
}

export class Meter {
  private intervals: Interval[] = [];
  private recording = false;

  /** Forgets what was recorded and records from now on (call right before a timed operation). */
  start(): void {
    this.intervals = [];
    this.recording = true;
  }

  stop(): void {
    this.recording = false;
  }

  async around<T>(kind: Kind, label: string, call: () => Promise<T>, bytes = 0): Promise<T> {
    if (!this.recording) return call();
    const interval: Interval = { start: performance.now(), end: Number.NaN, kind, label, bytes };
    this.intervals.push(interval);
    try {
      return await call();
    } finally {
      interval.end = performance.now();
    }
  }

  /** Union of the intervals of these kinds inside [from, to]. */
  busy(kinds: readonly Kind[], from: number, to: number): number {
    const clipped = this.intervals
      .filter((i) => kinds.includes(i.kind))
      .map((i) => [Math.max(from, i.start), Math.min(to, Number.isNaN(i.end) ? to : i.end)] as const)
      .filter(([a, b]) => b > a)
      .sort((x, y) => x[0] - y[0]);
    let total = 0;
    let open: [number, number] | undefined;
    for (const [a, b] of clipped) {
      if (open === undefined || a > open[1]) {
        if (open !== undefined) total += open[1] - open[0];
        open = [a, b];
      } else if (b > open[1]) {
        open[1] = b;
      }
    }
    if (open !== undefined) total += open[1] - open[0];
    return total;
  }

  /** Bytes handed to file writes inside [from, to]. */
  bytesWritten(from: number, to: number): number {
    return this.intervals
      .filter((i) => i.kind === "disk" && i.start >= from && i.start < to)
      .reduce((n, i) => n + i.bytes, 0);
  }

  /**
   * The recorded intervals inside [from, to], one line each: start and duration (ms, from `from`), kind,
   * label and bytes written. What BENCH_TRACE prints.
   */
  trace(from: number, to: number): string[] {
    return this.intervals
      .filter((i) => i.start >= from && i.start < to)
      .map((i) => {
        const end = Number.isNaN(i.end) ? to : i.end;
        const bytes = i.bytes > 0 ? ` ${i.bytes} B` : "";
        return `  +${(i.start - from).toFixed(2)} ${(end - i.start).toFixed(2)} ms ${i.kind} ${i.label}${bytes}`;
      });
  }

  /** How many intervals of these kinds started inside [from, to], by label. */
  counts(kinds: readonly Kind[], from: number, to: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const i of this.intervals) {
      if (kinds.includes(i.kind) && i.start >= from && i.start < to) out[i.label] = (out[i.label] ?? 0) + 1;
    }
    return out;
  }
}

/** "GET /v1/accounts/:acct/devices" style labels: method and path, with ids folded. */
function labelOf(method: string, url: URL): string {
  const path = url.pathname
    .replace(/^\/v1\/groups\/[^/]+/, "/v1/groups/:id")
    .replace(/^\/v1\/accounts\/[^/]+/, "/v1/accounts/:acct")
    .replace(/^\/v1\/devices\/[^/]+/, "/v1/devices/:id");
  return `${method.toUpperCase()} ${path}`;
}

/** Member verification: the profile lookups and the account's device list. */
const IDENTITY = new Set([
  "GET /.well-known/webfinger",
  "GET /api/v1/accounts/lookup",
  "GET /api/v2/instance",
  "GET /v1/accounts/:acct/devices",
]);

type RequestFn = (
  url: URL,
  options: { method?: string },
  callback: (res: IncomingMessage) => void,
) => ClientRequest;

/**
 * Meters node:http's and node:https's `request`, which every request of the client goes through (the
 * bridge's `exchange`: our services, and the lookups of member verification, kind "identity"). An
 * interval runs from the call to the end of the answer (or the request's failure).
 */
export function meterHttp(meter: Meter): void {
  for (const mod of [http, https] as unknown as Record<string, unknown>[]) {
    const original = mod.request as RequestFn;
    mod.request = function (
      this: unknown,
      url: URL,
      options: { method?: string },
      callback: (res: IncomingMessage) => void,
    ) {
      // Other callers (ws opens the stream's WebSocket with one options argument) are not metered: an
      // upgrade has no answer to wait for.
      if (!(url instanceof URL) || options === undefined) {
        return (original as unknown as (...a: unknown[]) => ClientRequest).apply(this, [
          url,
          options,
          callback,
        ]);
      }
      const label = labelOf(options.method ?? "GET", url);
      let done!: () => void;
      const ended = new Promise<void>((resolve) => (done = resolve));
      void meter.around(IDENTITY.has(label) ? "identity" : "service", label, () => ended);
      const req = original.call(this, url, options, (res) => {
        res.once("end", done);
        res.once("close", done);
        callback(res);
      });
      req.once("error", done);
      return req;
    };
  }
  syncBuiltinESMExports();
}

type AnyAsync = (...args: unknown[]) => Promise<unknown>;

function sizeOf(data: unknown): number {
  if (typeof data === "string") return Buffer.byteLength(data);
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return 0;
}

function wrap(
  target: Record<string, unknown>,
  name: string,
  meter: Meter,
  label: string,
  dataArg?: number,
): void {
  const original = target[name] as AnyAsync | undefined;
  if (typeof original !== "function") return;
  target[name] = function (this: unknown, ...args: unknown[]) {
    const bytes = dataArg === undefined ? 0 : sizeOf(args[dataArg]);
    return meter.around("disk", label, () => original.apply(this, args), bytes);
  };
}

/** Meters node:fs/promises and FileHandle (kind "disk"). */
export async function meterDisk(meter: Meter, anyReadableFile: string): Promise<void> {
  const promises = fsp as unknown as Record<string, unknown>;
  for (const name of [
    "open",
    "readFile",
    "writeFile",
    "rename",
    "rm",
    "unlink",
    "stat",
    "mkdir",
    "readdir",
  ]) {
    wrap(promises, name, meter, `fs.${name}`, name === "writeFile" ? 1 : undefined);
  }
  syncBuiltinESMExports();
  const handle = await fsp.open(anyReadableFile, "r");
  const proto = Object.getPrototypeOf(handle) as Record<string, unknown>;
  await handle.close();
  for (const name of ["sync", "datasync", "writeFile", "write", "readFile", "read", "close"]) {
    wrap(proto, name, meter, `handle.${name}`, name === "writeFile" || name === "write" ? 0 : undefined);
  }
}
