// A test process that dies without stop() must not leave redis-server (or its directory) behind.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { findRedisServer } from "./process-redis.js";
import { processIsAlive } from "./test-helpers.js";
import { deferred, waitFor } from "./util.js";

const haveRedisServer = (await findRedisServer(process.env.REDIS_SERVER_BIN || undefined)) !== undefined;
const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "orphan-child.ts");

interface Started {
  pid: number;
  dataDir: string;
  exited: Promise<number | null>;
  kill(signal: NodeJS.Signals): void;
}

async function startChild(how: "wait" | "exit"): Promise<Started> {
  const child = spawn(
    process.execPath,
    ["--conditions=mastodon-mls-source", "--import", "tsx", fixture, how],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, REDIS_URL: "" },
    },
  );
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const line = deferred<string>();
  let out = "";
  let errText = "";
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString();
    const nl = out.indexOf("\n");
    if (nl >= 0) line.resolve(out.slice(0, nl));
  });
  child.stderr.on("data", (chunk: Buffer) => (errText += chunk.toString()));
  void exited.then((code) => line.reject(new Error(`fixture exited (${code}) early: ${errText}`)));
  const info = JSON.parse(
    await waitFor(() => line.promise, { timeoutMs: 20_000, message: "fixture to report its Redis" }),
  ) as { pid: number; dataDir: string };
  return { ...info, exited, kill: (signal) => child.kill(signal) };
}

describe.skipIf(!haveRedisServer)("no redis-server outlives the test process", () => {
  it.concurrent.for([
    ["exits normally without stop()", "exit", undefined, true],
    ["is terminated by SIGTERM", "wait", "SIGTERM", true],
    // SIGKILL runs no JavaScript: the server still dies (PR_SET_PDEATHSIG via setpriv on Linux),
    // but its temporary directory stays (it is under the OS temp dir).
    ["is killed by SIGKILL", "wait", "SIGKILL", false],
  ] as const)("when the parent %s", async ([, how, signal, dirRemoved]) => {
    const child = await startChild(how);
    if (how === "wait") expect(processIsAlive(child.pid)).toBe(true);
    if (signal !== undefined) child.kill(signal);
    await child.exited;
    await waitFor(() => !processIsAlive(child.pid), {
      timeoutMs: 5000,
      message: `redis-server pid ${child.pid} to be gone after its parent ended`,
    });
    if (dirRemoved) expect(existsSync(child.dataDir)).toBe(false);
    else await rm(child.dataDir, { recursive: true, force: true });
  });
});
