// Where the client's time goes besides computing, measured from the outside of the library.
//
// - Network: the client reaches our services with the global fetch (transport/http.ts) and looks
//   accounts up with the bridge's safe HTTP GET (WebFinger, accounts/lookup), which it takes from
//   `identity.get` when given one. Both are wrapped: a request is an interval from the call to the last
//   byte of the answer (fetch's body is read inside the interval, then handed on as a new Response).
//   The services run in another process, so an interval is the loopback round trip plus the service's
//   own work, during which this process waits.
// - Disk: node:fs/promises (and FileHandle's methods), which the client's store uses for every file,
//   are wrapped the same way (module.syncBuiltinESMExports makes the wrappers visible to modules that
//   imported the functions by name). An interval is the wait for the thread pool: writing, fsync,
//   rename, reading. Encryption and encoding happen before the write and are not in it.
//
// Overlapping intervals count once: each figure is the union of the intervals of its kinds.
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { createSafeHttpGet, type HttpGet } from "@mastodon-mls/bridge";

export type Kind = "service" | "identity" | "disk";

interface Interval {
  start: number;
  end: number;
  kind: Kind;
  label: string;
  /** Bytes handed to a write. */
  bytes: number;
}

/** Statuses whose Response must have a null body. */
const NULL_BODY = new Set([101, 204, 205, 304]);

export class Meter {
  private intervals: Interval[] = [];
  private recording = false;
  /** process.cpuUsage() when the first interval of each kind started. */
  private readonly firstCpu = new Map<Kind, NodeJS.CpuUsage>();

  /** Forgets what was recorded and records from now on (call right before a timed operation). */
  start(): void {
    this.intervals = [];
    this.firstCpu.clear();
    this.recording = true;
  }

  stop(): void {
    this.recording = false;
  }

  async around<T>(kind: Kind, label: string, call: () => Promise<T>, bytes = 0): Promise<T> {
    if (!this.recording) return call();
    if (!this.firstCpu.has(kind)) this.firstCpu.set(kind, process.cpuUsage());
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

  /** When the first interval of this kind started at or after `from` (undefined: none). */
  firstOf(kind: Kind, from: number): number | undefined {
    return this.intervals.find((i) => i.kind === kind && i.start >= from)?.start;
  }

  /** process.cpuUsage() when the first interval of this kind started (undefined: none). */
  cpuAtFirst(kind: Kind): NodeJS.CpuUsage | undefined {
    return this.firstCpu.get(kind);
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
function labelOf(method: string, url: string): string {
  const path = new URL(url).pathname
    .replace(/\/v1\/groups\/[^/]+/, "/v1/groups/:id")
    .replace(/\/v1\/accounts\/[^/]+/, "/v1/accounts/:acct")
    .replace(/\/v1\/devices\/[^/]+/, "/v1/devices/:id");
  return `${method.toUpperCase()} ${path}`;
}

/**
 * Replaces globalThis.fetch with a metered one. Reading an account's device list is part of member
 * verification (kind "identity", with the profile lookups); everything else is "service" (hub, directory).
 */
export function meterFetch(meter: Meter): void {
  const original = globalThis.fetch;
  globalThis.fetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const method = init?.method ?? (input instanceof Request ? input.method : "GET");
    const label = labelOf(method, url);
    const kind: Kind = label === "GET /v1/accounts/:acct/devices" ? "identity" : "service";
    return meter.around(kind, label, async () => {
      const res = await original(input, init);
      const body = NULL_BODY.has(res.status) ? null : await res.arrayBuffer();
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    });
  };
}

/** The transport the client makes itself for a development resolver (plain HTTP to loopback), metered. */
export function meteredIdentityGet(meter: Meter): HttpGet {
  const get = createSafeHttpGet({ allowInsecureLoopback: true });
  return (url, options) => {
    const path = new URL(url).pathname;
    return meter.around("identity", `GET ${path}`, () => get(url, options));
  };
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
