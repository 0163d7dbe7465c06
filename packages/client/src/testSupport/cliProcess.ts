import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { fileURLToPath } from "node:url";

// Test support: the `mls-dm` bin as a separate process, exactly as a user runs it (from the TypeScript
// sources: MLS_DM_FROM_SOURCE=1, so that a stale dist/ never stands in for them). Every run uses the
// cheap test Argon2id parameters (MLS_DM_INSECURE_TEST_KDF=1); the real ones are measured in backup.test.ts.

export const BIN = fileURLToPath(new URL("../../bin/mls-dm.js", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Written to standard input, which is then closed. */
  input?: string;
}

function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  // eslint-disable-next-line no-restricted-properties -- the child runs in this process's environment
  const env: NodeJS.ProcessEnv = { ...process.env, MLS_DM_FROM_SOURCE: "1", MLS_DM_INSECURE_TEST_KDF: "1" };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function startCli(args: string[], opts: CliOptions = {}): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [BIN, ...args], { env: childEnv(opts.env), stdio: "pipe" });
}

/** Runs the command to completion. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = startCli(args, opts);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin.end(opts.input ?? "");
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A long-running command (listen): its output line by line, and a way to stop it like Ctrl-C. */
export class LiveCli {
  readonly lines: string[] = [];
  stderr = "";
  private buffered = "";
  private waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  private readonly exited: Promise<number | null>;

  constructor(args: string[], opts: CliOptions = {}) {
    const child = startCli(args, opts);
    this.child = child;
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      this.buffered += d;
      const parts = this.buffered.split("\n");
      this.buffered = parts.pop()!;
      for (const line of parts) this.push(line);
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => child.on("close", (code) => resolve(code)));
  }

  private readonly child: ChildProcessWithoutNullStreams;

  private push(line: string): void {
    this.lines.push(line);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** The first line (already printed or to come) that matches. */
  next(match: (line: string) => boolean, what: string): Promise<string> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ match, resolve });
      void this.exited.then((code) =>
        reject(new Error(`the process ended (exit ${code}) before ${what}; stderr: ${this.stderr}`)),
      );
    });
  }

  write(text: string): void {
    this.child.stdin.write(text);
  }

  /** SIGINT, as Ctrl-C, without waiting for the process to end. */
  interrupt(): void {
    this.child.kill("SIGINT");
  }

  /** SIGINT, as Ctrl-C; resolves with the exit code. */
  async stop(): Promise<number | null> {
    this.child.kill("SIGINT");
    return this.exited;
  }

  wait(): Promise<number | null> {
    return this.exited;
  }
}
