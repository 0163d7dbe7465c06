import { createInterface, type Interface } from "node:readline";

// Terminal input and output of the CLI. Everything meant for scripts goes to stdout; prompts, progress,
// warnings and errors go to stderr. Secrets are read without echo from a terminal, or as a line from a
// pipe (scripts and tests usually pass them in the environment instead).

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export class Interrupted extends Error {
  constructor() {
    super("interrupted");
    this.name = "Interrupted";
  }
}

export interface Io {
  out(text: string): void;
  err(text: string): void;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdinIsTty: boolean;
  readonly stderrIsTty: boolean;
  readLine(prompt: string): Promise<string>;
  readSecret(prompt: string): Promise<string>;
}

export function processIo(): Io {
  const stdin = process.stdin;
  let piped:
    | { rl: Interface; lines: string[]; waiters: ((l: string | undefined) => void)[]; closed: boolean }
    | undefined;
  const pipedLine = (): Promise<string | undefined> => {
    if (piped === undefined) {
      const rl = createInterface({ input: stdin, terminal: false });
      const state = {
        rl,
        lines: [] as string[],
        waiters: [] as ((l: string | undefined) => void)[],
        closed: false,
      };
      rl.on("line", (line) => {
        const w = state.waiters.shift();
        if (w) w(line);
        else state.lines.push(line);
      });
      rl.on("close", () => {
        state.closed = true;
        for (const w of state.waiters.splice(0)) w(undefined);
      });
      piped = state;
    }
    const p = piped;
    const ready = p.lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (p.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => p.waiters.push(resolve));
  };
  const io: Io = {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
    env: process.env,
    stdinIsTty: stdin.isTTY === true,
    stderrIsTty: process.stderr.isTTY === true,
    async readLine(prompt) {
      process.stderr.write(prompt);
      if (stdin.isTTY === true) {
        const rl = createInterface({ input: stdin, output: process.stderr, terminal: true });
        try {
          return await new Promise<string>((resolve, reject) => {
            rl.once("line", resolve);
            rl.once("SIGINT", () => reject(new Interrupted()));
          });
        } finally {
          rl.close();
        }
      }
      const line = await pipedLine();
      if (line === undefined) throw new UsageError("no input: standard input ended");
      return line;
    },
    async readSecret(prompt) {
      if (stdin.isTTY !== true) {
        process.stderr.write(prompt);
        const line = await pipedLine();
        if (line === undefined) throw new UsageError("no input: standard input ended");
        return line;
      }
      process.stderr.write(prompt);
      return new Promise<string>((resolve, reject) => {
        let value = "";
        stdin.setRawMode(true);
        stdin.setEncoding("utf8");
        stdin.resume();
        const finish = (error?: Error) => {
          stdin.off("data", onData);
          stdin.setRawMode(false);
          stdin.pause();
          process.stderr.write("\n");
          if (error) reject(error);
          else resolve(value);
        };
        const onData = (chunk: string) => {
          for (const ch of chunk) {
            if (ch === "\r" || ch === "\n" || ch === "\u0004") return finish();
            if (ch === "\u0003") return finish(new Interrupted());
            if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
            else if (ch >= " ") value += ch;
          }
        };
        stdin.on("data", onData);
      });
    },
  };
  return io;
}

/**
 * Runs `work`, telling the user what is going on if it takes more than a second (DESIGN: progress for
 * anything over a second). `report` may be called with a fraction (Argon2id) to show a percentage on a
 * terminal.
 */
export async function withProgress<T>(
  io: Io,
  label: string,
  work: (report: (fraction: number) => void) => Promise<T>,
): Promise<T> {
  let shown = false;
  let last = -1;
  const timer = setTimeout(() => {
    shown = true;
    io.err(`${label}…`);
  }, 1000);
  const report = (fraction: number) => {
    if (!shown || !io.stderrIsTty) return;
    const pct = Math.floor(fraction * 10) * 10;
    if (pct !== last && pct < 100) {
      last = pct;
      process.stderr.write(`  ${pct}%\r`);
    }
  };
  try {
    return await work(report);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Terminal-safe text from others (or from a service): control characters (escape sequences!) shown as
 * \u{…}, never interpreted, and the lines after the first indented, so that the text cannot print a line
 * that reads as another message or another notice of mls-dm. A second pass changes nothing.
 */
export function safeText(text: string): string {
  return text
    .replace(
      // eslint-disable-next-line no-control-regex -- matching control characters is the point
      /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
      (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`,
    )
    .replace(/\n(?: {4})?/g, "\n    ");
}
