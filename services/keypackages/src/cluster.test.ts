import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { startRedis, waitFor, type RedisHandle } from "@mastodon-mls/testkit";
import { createTestDevice, deviceSigned, type TestDevice } from "./testing/devices.js";
import { PUBLIC_URL, createMember, startMastodon } from "./testing/harness.js";

// WORKERS=2: the real entry point (src/main.ts) as a node:cluster of two directories on one Redis.
// Every request below goes over a connection of its own, so that the primary hands them to the workers
// in turn: what one worker saw must hold on the other (nonces, rate limits, KeyPackages), /metrics must
// count both, a killed worker is replaced, and SIGTERM stops them all.

let mastodon: DevMastodon;
let redis: RedisHandle;
let primary: ChildProcess;
let base: string;
/** The log lines the primary and its workers wrote so far. */
const logs: { msg?: string; url?: string; pid?: number }[] = [];

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

/** The directory processes whose parent is `pid` (its workers; tsx also starts an esbuild), from /proc. */
function workersOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent === pid && readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(MAIN)) {
        out.push(Number(entry));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** One request on a fresh connection (no keep-alive): the cluster's primary picks the next worker. */
function request(
  path: string,
  opts: { method?: string; headers?: Record<string, string>; raw?: string } = {},
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are looked into freely
): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: opts.method ?? "GET",
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          let json: unknown = text;
          try {
            json = JSON.parse(text);
          } catch {
            // Not JSON: /metrics.
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on("error", reject);
    req.end(opts.raw);
  });
}

async function claim(requester: TestDevice, accounts: string[]) {
  const signed = await deviceSigned(requester, {
    origin: PUBLIC_URL,
    method: "POST",
    path: "/v1/claims",
    body: { ciphersuite: 1, accounts },
  });
  return { signed, answer: await request("/v1/claims", { method: "POST", ...signed }) };
}

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
  primary = spawn(process.execPath, ["--conditions=mastodon-mls-source", "--import", "tsx", MAIN], {
    env: {
      PATH: process.env.PATH,
      WORKERS: "2",
      HOST: "127.0.0.1",
      PORT: "0",
      PUBLIC_URL,
      MASTODON_URL: mastodon.url,
      INSTANCE_DOMAIN: "a.test",
      STORE: "redis",
      REDIS_URL: redis.url,
      REDIS_PREFIX: `${redis.keyPrefix}kp:`,
      RATE_LIMIT_DEVICE_MAX: "4",
      RATE_LIMIT_DEVICE_WINDOW_SECONDS: "3600",
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  primary.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString();
    const lines = out.split("\n");
    out = lines.pop()!;
    for (const line of lines) if (line.startsWith("{")) logs.push(JSON.parse(line) as (typeof logs)[number]);
  });
  base = await new Promise<string>((resolve, reject) => {
    primary.once("exit", (code) => reject(new Error(`the directory exited with ${code}`)));
    void waitFor(() => logs.find((l) => l.msg === "key-package directory listening")?.url, {
      timeoutMs: 50_000,
    }).then(resolve, reject);
  });
}, 60_000);

afterAll(async () => {
  if (primary.exitCode === null && primary.signalCode === null) {
    const exited = new Promise((resolve) => primary.once("exit", resolve));
    primary.kill("SIGKILL");
    await exited;
  }
  await Promise.all([mastodon.close(), redis.stop()]);
});

describe("WORKERS=2", () => {
  it("runs two workers that share nonces, rate limits and KeyPackages, and counts them together", async () => {
    expect(workersOf(primary.pid!)).toHaveLength(2);
    const alice = await createMember(mastodon, base, "alice", { keyPackages: 3 });
    const requester = await createTestDevice("r@elsewhere.test");
    const handed = new Set<string>();
    const first = await claim(requester, [alice.acct]);
    expect(first.answer.status).toBe(200);
    handed.add(first.answer.json.accounts[0].key_packages[0].key_package as string);
    // The same signed request again, on the next connection (so the other worker): a replay.
    const replay = await request("/v1/claims", { method: "POST", ...first.signed });
    expect(replay).toMatchObject({ status: 401, json: { error: "auth_replayed" } });
    for (let i = 0; i < 3; i++) {
      const { answer } = await claim(requester, [alice.acct]);
      if (i < 2) handed.add(answer.json.accounts[0].key_packages[0].key_package as string);
      else expect(answer.json.accounts[0]).toMatchObject({ exhausted: [alice.device.deviceId] });
    }
    // Each KeyPackage went out once across both workers.
    expect(handed.size).toBe(3);
    // The device limit (4) was spent on both workers together; the replay spent none of it.
    expect((await claim(requester, [alice.acct])).answer).toMatchObject({
      status: 429,
      json: { error: "rate_limited", limit: "device" },
    });
    // Whichever worker answers the scrape, it reports what both did.
    for (let i = 0; i < 2; i++) {
      const metrics = await request("/metrics");
      expect(metrics.status).toBe(200);
      expect(metrics.json).toMatch(/\nkeypackages_claim_requests_total 4\n/);
      expect(metrics.json).toMatch(/keypackages_handed_out_total\{kind="ordinary"\} 3\n/);
      expect(metrics.json).toMatch(/keypackages_rate_limited_total\{limit="device"\} 1\n/);
    }
  });

  it("replaces a worker that dies, serving meanwhile, and stops all of them on SIGTERM", async () => {
    const [victim, survivor] = workersOf(primary.pid!);
    process.kill(victim!, "SIGKILL");
    // Connections the primary handed to the worker between its death and the primary noticing it are
    // lost (node:cluster); from then on the survivor takes every one while the replacement starts.
    await waitFor(() => logs.some((l) => l.msg === "a worker exited; starting another"), {
      timeoutMs: 10_000,
    });
    const requester = await createTestDevice("after@elsewhere.test");
    for (let i = 0; i < 3; i++) {
      expect((await claim(requester, ["nobody@a.test"])).answer.status).toBe(200);
    }
    const workers = await waitFor(
      () => {
        const now = workersOf(primary.pid!);
        return now.length === 2 && !now.includes(victim!) ? now : undefined;
      },
      { timeoutMs: 30_000, message: "a replacement worker" },
    );
    expect(workers).toContain(survivor);
    await waitFor(async () => (await request("/readyz")).status === 200, { timeoutMs: 10_000 });
    const exited = new Promise<number | null>((resolve) => primary.once("exit", resolve));
    primary.kill("SIGTERM");
    expect(await exited).toBe(0);
    // The primary exits only once its workers did.
    for (const pid of workers) expect(existsSync(`/proc/${pid}`)).toBe(false);
  });
});
