/** Mode "process": a private redis-server child on a free port with its own temporary directory. */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants as fsConstants, rmSync } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { closeRedisClients } from "./clients.js";
import { freePort } from "./ports.js";
import { respCall } from "./resp.js";
import type { RedisHandle, RedisPersistence } from "./types.js";
import { describeError, waitFor, WaitForTimeoutError } from "./util.js";

export interface ProcessRedisOptions {
  bin: string;
  persistence: RedisPersistence;
  extraArgs: readonly string[];
  startTimeoutMs: number;
  db: number;
  keyPrefix: string;
}

const HOST = "127.0.0.1";
const LOG_LINES = 40;
const START_ATTEMPTS = 5;
const EXIT_TIMEOUT_MS = 5000;

/** Every process handle whose server may be running or whose directory may still exist. */
const live = new Set<ProcessRedis>();

// ---------------------------------------------------------------------------------------------
// Locating the binary

export class RedisBinaryError extends Error {
  override readonly name = "RedisBinaryError";
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function searchPath(name: string, pathEnv: string | undefined): Promise<string | undefined> {
  for (const dir of (pathEnv ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/**
 * The redis-server to use: `explicit` (option or REDIS_SERVER_BIN) must exist, else an error;
 * otherwise the first `redis-server` on PATH, or undefined.
 */
export async function findRedisServer(
  explicit: string | undefined,
  pathEnv: string | undefined = process.env.PATH,
): Promise<string | undefined> {
  if (explicit !== undefined && explicit !== "") {
    if (explicit.includes("/")) {
      if (await isExecutable(explicit)) return path.resolve(explicit);
    } else {
      const found = await searchPath(explicit, pathEnv);
      if (found !== undefined) return found;
    }
    throw new RedisBinaryError(
      `redis-server binary ${JSON.stringify(explicit)} (REDIS_SERVER_BIN or the redisServerBin option) ` +
        `is not an executable file${explicit.includes("/") ? "" : " on PATH"}. ` +
        `Point it at a redis-server executable, or unset it to search PATH.`,
    );
  }
  return searchPath("redis-server", pathEnv);
}

/** setpriv(1) lets the child get SIGKILL when the test process dies, even by SIGKILL (Linux only). */
let setprivPath: string | null | undefined;
function pdeathsigWrapper(): string | null {
  if (setprivPath !== undefined) return setprivPath;
  setprivPath = null;
  if (process.platform !== "linux") return setprivPath;
  for (const candidate of ["/usr/bin/setpriv", "/bin/setpriv"]) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      setprivPath = candidate;
      break;
    } catch {
      // not here
    }
  }
  return setprivPath;
}

// ---------------------------------------------------------------------------------------------
// Cleanup when the test process ends

let hooksInstalled = false;
function killAllSync(): void {
  for (const handle of live) handle.killSync();
}
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once("exit", killAllSync);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAllSync();
      process.removeListener(signal, onSignal);
      // Nobody else handles it: restore the default behaviour (terminate) by re-raising.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/** Stops every process-mode Redis the harness started in this process. */
export async function stopAllProcessRedis(): Promise<void> {
  await Promise.all([...live].map((h) => h.stop()));
}

// ---------------------------------------------------------------------------------------------
// One running redis-server

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

interface Running {
  child: ChildProcess;
  exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
}

class LogTail {
  private lines: string[] = [];
  private partial = "";
  push(chunk: Buffer): void {
    const text = this.partial + chunk.toString("utf8");
    const parts = text.split("\n");
    this.partial = parts.pop() ?? "";
    for (const line of parts) this.lines.push(line.replace(/\r$/, ""));
    if (this.lines.length > LOG_LINES) this.lines.splice(0, this.lines.length - LOG_LINES);
  }
  mark(note: string): void {
    this.lines.push(`--- ${note} ---`);
  }
  text(n = LOG_LINES): string {
    const all = this.partial === "" ? this.lines : [...this.lines, this.partial];
    return all.slice(-n).join("\n");
  }
}

function isAddressInUse(logs: string): boolean {
  return /address already in use/i.test(logs);
}

export class ProcessRedis implements RedisHandle {
  readonly kind = "process" as const;
  readonly host = HOST;
  readonly url: string;
  readonly db: number;
  readonly keyPrefix: string;
  private running: Running | undefined;
  private stopped = false;
  private stopping: Promise<void> | undefined;
  private readonly logs = new LogTail();

  private constructor(
    readonly port: number,
    readonly dataDir: string,
    private readonly options: ProcessRedisOptions,
  ) {
    this.db = options.db;
    this.keyPrefix = options.keyPrefix;
    this.url = `redis://${HOST}:${port}${options.db === 0 ? "" : `/${options.db}`}`;
  }

  static async start(options: ProcessRedisOptions): Promise<ProcessRedis> {
    installExitHooks();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "mmls-redis-"));
    let lastLogs = "";
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const handle = new ProcessRedis(await freePort(HOST), dataDir, options);
      live.add(handle);
      try {
        if (await handle.launch()) return handle;
        lastLogs = handle.logTail();
      } catch (err) {
        live.delete(handle);
        await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
        throw err;
      }
      live.delete(handle); // port was taken between freePort() and bind: try another one
    }
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    throw new Error(
      `redis-server could not bind a free port in ${START_ATTEMPTS} attempts (address already in use). ` +
        `Last log lines:\n${lastLogs}`,
    );
  }

  get pid(): number | undefined {
    return this.isRunning() ? this.running?.child.pid : undefined;
  }

  logTail(): string {
    return this.logs.text();
  }

  private isRunning(): boolean {
    return this.running !== undefined && this.running.exitInfo === undefined;
  }

  private args(): string[] {
    const { persistence, extraArgs } = this.options;
    return [
      "--port",
      String(this.port),
      "--bind",
      HOST,
      "--dir",
      this.dataDir,
      "--daemonize",
      "no",
      "--logfile",
      "",
      "--save",
      "",
      "--appendonly",
      persistence === "aof" ? "yes" : "no",
      ...(persistence === "aof" ? ["--appendfsync", "always"] : []),
      ...extraArgs,
    ];
  }

  private spawnServer(): Running {
    const { bin } = this.options;
    const wrapper = pdeathsigWrapper();
    const [command, args] =
      wrapper === null ? [bin, this.args()] : [wrapper, ["--pdeathsig", "KILL", "--", bin, ...this.args()]];
    this.logs.mark(`starting ${bin} on ${HOST}:${this.port}`);
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], detached: false });
    const running: Running = {
      child,
      exitInfo: undefined,
      exited: undefined as unknown as Promise<ExitInfo>,
    };
    running.exited = new Promise<ExitInfo>((resolve) => {
      const done = (info: ExitInfo): void => {
        if (running.exitInfo !== undefined) return;
        running.exitInfo = info;
        this.logs.mark(
          info.error
            ? `spawn failed: ${describeError(info.error)}`
            : `exited code=${info.code} signal=${info.signal}`,
        );
        resolve(info);
      };
      child.once("exit", (code, signal) => done({ code, signal }));
      child.once("error", (error) => done({ code: null, signal: null, error }));
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on("data", (chunk: Buffer) => this.logs.push(chunk));
      (stream as Socket | null)?.unref?.();
    }
    // The harness must never keep the test process alive by itself; the exit hooks kill the child.
    child.unref();
    return running;
  }

  /** Spawns the server and waits until it answers. False when the port was already in use. */
  private async launch(): Promise<boolean> {
    const running = this.spawnServer();
    this.running = running;
    const pid = running.child.pid;
    const abort = new AbortController();
    void running.exited.then(() => abort.abort(new Error("redis-server exited")));
    try {
      await waitFor(() => this.answersAsItself(pid), {
        timeoutMs: this.options.startTimeoutMs,
        intervalMs: 20,
        signal: abort.signal,
        message: `redis-server on ${HOST}:${this.port} to answer PING`,
      });
      return true;
    } catch (err) {
      if (running.exitInfo !== undefined) {
        const info = running.exitInfo;
        if (info.error === undefined && isAddressInUse(this.logs.text())) return false;
        const how = info.error
          ? `could not be started (${describeError(info.error)})`
          : `exited (code ${info.code}, signal ${info.signal}) before it answered PING`;
        throw new Error(
          `redis-server ${this.options.bin} ${how} on ${HOST}:${this.port}, dir ${this.dataDir}. ` +
            `Last log lines:\n${this.logs.text()}`,
        );
      }
      running.child.kill("SIGKILL");
      await this.waitExit(running);
      const why = err instanceof WaitForTimeoutError ? err.message : describeError(err);
      throw new Error(
        `redis-server ${this.options.bin} did not become ready on ${HOST}:${this.port} ` +
          `within ${this.options.startTimeoutMs} ms (${why}). Last log lines:\n${this.logs.text()}`,
      );
    }
  }

  /** PONG from the server, and INFO says it is our child (not another server that took the port). */
  private async answersAsItself(pid: number | undefined): Promise<boolean> {
    const [pong, info] = await respCall(HOST, this.port, [["PING"], ["INFO", "server"]], { timeoutMs: 1000 });
    if (pong !== "PONG" || typeof info !== "string") return false; // e.g. -LOADING while reading the AOF
    const match = /^process_id:(\d+)/m.exec(info);
    return match !== null && Number(match[1]) === pid;
  }

  private async waitExit(running: Running, timeoutMs = EXIT_TIMEOUT_MS): Promise<boolean> {
    if (running.exitInfo !== undefined) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([running.exited.then(() => true as const), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SHUTDOWN [NOSAVE], falling back to SIGTERM, then SIGKILL; resolves once the process is gone. */
  private async shutdown(nosave: boolean): Promise<void> {
    const running = this.running;
    if (running === undefined || running.exitInfo !== undefined) return;
    try {
      await respCall(HOST, this.port, [nosave ? ["SHUTDOWN", "NOSAVE"] : ["SHUTDOWN"]], {
        timeoutMs: 2000,
        expectClose: true,
      });
    } catch {
      running.child.kill("SIGTERM");
    }
    if (await this.waitExit(running)) return;
    running.child.kill("SIGTERM");
    if (await this.waitExit(running)) return;
    running.child.kill("SIGKILL");
    if (await this.waitExit(running)) return;
    throw new Error(`redis-server pid ${running.child.pid} on port ${this.port} did not exit`);
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.stopped) throw new Error("kill(): this Redis handle was stopped");
    const running = this.running;
    if (running === undefined || running.exitInfo !== undefined) return;
    running.child.kill(signal);
    if (!(await this.waitExit(running))) {
      throw new Error(`redis-server pid ${running.child.pid} did not exit after ${signal}`);
    }
  }

  async restart(): Promise<void> {
    if (this.stopped)
      throw new Error("restart(): this Redis handle was stopped and its data directory removed");
    await this.shutdown(false);
    // Same port: it may be briefly held by someone else (e.g. an outgoing socket); retry until the deadline.
    const deadline = Date.now() + this.options.startTimeoutMs;
    for (;;) {
      if (await this.launch()) return;
      if (Date.now() > deadline) {
        throw new Error(
          `restart(): port ${this.port} stayed in use, redis-server could not bind it. ` +
            `Last log lines:\n${this.logs.text()}`,
        );
      }
    }
  }

  async flush(): Promise<void> {
    if (!this.isRunning()) throw new Error("flush(): redis-server is not running");
    const [reply] = await respCall(HOST, this.port, [["FLUSHALL"]]);
    if (reply !== "OK") throw new Error(`FLUSHALL failed: ${String(reply)}`);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopped = true;
      try {
        await closeRedisClients(this);
        await this.shutdown(true);
      } finally {
        await rm(this.dataDir, { recursive: true, force: true, maxRetries: 3 });
        live.delete(this);
      }
    })();
    return this.stopping;
  }

  /** Synchronous last-resort cleanup for process exit. */
  killSync(): void {
    if (this.isRunning()) this.running?.child.kill("SIGKILL");
    try {
      rmSync(this.dataDir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort during exit
    }
    live.delete(this);
  }
}
