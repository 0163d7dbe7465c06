// `npm run bench:directory`: a load generator for the key-package directory (issue 4). Not a test.
//
// Starts a real redis-server (testkit), the development Mastodon, and the directory in its own process
// on the Redis store with rate limits off; registers devices; then measures, at 1, 8 and 64 concurrent
// clients over keep-alive HTTP, bearer-token uploads of real KeyPackages and device-signed claims. All
// KeyPackages and request signatures are made before the clock starts (that is client CPU). Then runs
// redis-benchmark against the same Redis, prints a table with the ratio claims/s ÷ raw SET/s, and ends
// with one JSON line {"bench": "directory", …}.
//
// Environment (all optional): BENCH_LEVELS (default "1,8,64"), BENCH_UPLOADS (upload requests per
// level, default 192), BENCH_UPLOAD_BATCH (KeyPackages per upload, default 10), BENCH_CLAIMS (claim
// requests per level, default 6000), BENCH_SERVER_NODE_OPTIONS (extra node flags for the directory
// process, e.g. --cpu-prof), BENCH_DIRECTORY_PROCESSES (replicas of the directory on the same Redis,
// default 1; clients spread over them), BENCH_DIRECTORY_WORKERS (WORKERS of each: node:cluster
// workers behind one port, default 1), BENCH_RATE_LIMITS (`on`, the default: every limit is counted
// as in production, with maxima the benchmark's own traffic never reaches; `off`: RATE_LIMITS=off),
// REDIS_BENCHMARK_BIN (default redis-benchmark on PATH).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import {
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  signDeviceCertificate,
  signRequest,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { RedisDirectoryStore } from "@mastodon-mls/keypackages";
import { toBase64url } from "@mastodon-mls/protocol";
import { connectRedis, silentLogger } from "@mastodon-mls/service-kit";
import { freePort, startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { RawConnection, encodeRequest, type RawRequest } from "./rawClient.js";

const env = process.env;
const LEVELS = (env.BENCH_LEVELS ?? "1,8,64").split(",").map(Number);
const UPLOADS = Number(env.BENCH_UPLOADS ?? 192);
const UPLOAD_BATCH = Number(env.BENCH_UPLOAD_BATCH ?? 10);
const CLAIMS = Number(env.BENCH_CLAIMS ?? 6000);
const PROCESSES = Number(env.BENCH_DIRECTORY_PROCESSES ?? 1);
const WORKERS = env.BENCH_DIRECTORY_WORKERS ?? "1";
const RATE_LIMITS = env.BENCH_RATE_LIMITS ?? "on";
if (RATE_LIMITS !== "on" && RATE_LIMITS !== "off") throw new Error("BENCH_RATE_LIMITS must be on or off");
/**
 * Rate limits as production counts them, every counter incremented on every request, but with maxima
 * above what this run sends (at most 18 000 claims, ~300 per target account, 576 uploads): a refused or
 * downgraded claim would fail the run instead of measuring it.
 */
const BENCH_LIMITS: Record<string, string> =
  RATE_LIMITS === "on"
    ? Object.fromEntries(
        ["DEVICE", "DOMAIN", "TARGET", "ACCOUNT"].flatMap((name) => [
          [`RATE_LIMIT_${name}_MAX`, "1000000000"],
          [`RATE_LIMIT_${name}_WINDOW_SECONDS`, "3600"],
        ]),
      )
    : { RATE_LIMITS: "off" };
const DOMAIN = "bench.test";
const PREFIX = "kpbench:";
/** One account and device per client at the highest level: uploads of a client never share a device. */
const ACCOUNTS = Math.max(...LEVELS);

interface Device {
  acct: string;
  token: string;
  key: SigningKeyPair;
  certificate: Uint8Array;
  deviceId: string;
}

type Request = RawRequest;

interface LevelResult {
  clients: number;
  cpu?: CpuShares;
  requests: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
  failures: number;
}

/** CPU seconds (user + system) a process used so far, from /proc; NaN where /proc is missing. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return NaN;
  }
}

interface CpuShares {
  /** Share of one core each used while the level ran. */
  directory: number;
  redis: number;
  client: number;
  /** CPU seconds each used while the level ran. */
  seconds: { directory: number; redis: number; client: number };
}

/**
 * A process and every process below it (the workers of a directory started with DIRECTORY_WORKERS), from
 * /proc; just the process where /proc is missing.
 */
function withDescendants(root: number): number[] {
  const children = new Map<number, number[]>();
  try {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
      } catch {
        // The process ended meanwhile.
      }
    }
  } catch {
    return [root];
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!) ?? []));
  return out;
}

/** Runs `work` and says how busy each process was meanwhile, as a share of one core. */
async function measured<T>(
  pids: { directory: number[]; redis: number | undefined },
  work: () => Promise<T>,
): Promise<[T, CpuShares]> {
  const all = pids.directory.flatMap(withDescendants);
  const directoryCpu = () => all.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const before = { d: directoryCpu(), r: cpuSeconds(pids.redis), c: process.cpuUsage() };
  const start = performance.now();
  const result = await work();
  const seconds = (performance.now() - start) / 1000;
  const client = process.cpuUsage(before.c);
  const used = {
    directory: directoryCpu() - before.d,
    redis: cpuSeconds(pids.redis) - before.r,
    client: (client.user + client.system) / 1e6,
  };
  return [
    result,
    {
      directory: used.directory / seconds,
      redis: used.redis / seconds,
      client: used.client / seconds,
      seconds: used,
    },
  ];
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

async function makeDevice(acct: string, token: string): Promise<Device> {
  const now = Math.floor(Date.now() / 1000);
  const account = await generateSigningKeyPair();
  const key = await generateSigningKeyPair();
  const certificate = await signDeviceCertificate(
    {
      identity: `acct:${acct}`,
      accountKey: account.publicKey,
      sigKey: key.publicKey,
      notBefore: now - 60,
      notAfter: now + 30 * 86400,
    },
    account.signKey,
  );
  return { acct, token, key, certificate, deviceId: deviceIdText(key.publicKey) };
}

async function keyPackages(device: Device, n: number, lastResort = false): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const kp = await generateDeviceKeyPackage({
      identity: `acct:${device.acct}`,
      signatureKeyPair: device.key,
      certificate: device.certificate,
      lastResort,
    });
    out.push(kp.encoded);
  }
  return out;
}

/** One HTTP exchange on a keep-alive agent; resolves to the status and the body text. */
function send(base: URL, agent: http.Agent, req: Request): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request(
      {
        host: base.hostname,
        port: base.port,
        method: req.method,
        path: req.path,
        agent,
        headers: { ...req.headers, "content-length": Buffer.byteLength(req.body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      },
    );
    r.on("error", reject);
    r.end(req.body);
  });
}

/**
 * Sends every request with `clients` concurrent keep-alive connections (each one request at a time);
 * counts as a failure any answer but `ok`. The requests are encoded before the clock starts.
 */
async function runLevel(
  bases: URL[],
  clients: number,
  requests: Request[],
  ok: (status: number, body: string) => boolean,
): Promise<LevelResult> {
  const encoded = requests.map(encodeRequest);
  // Each client talks to one replica, the clients spread evenly over them.
  const connections = Array.from({ length: clients }, (_, i) => {
    const base = bases[i % bases.length]!;
    return new RawConnection(base.hostname, Number(base.port));
  });
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  let firstFailure = "";
  const worker = async (connection: RawConnection) => {
    while (next < encoded.length) {
      const req = encoded[next++]!;
      const t0 = performance.now();
      const res = await connection.send(req);
      latencies.push(performance.now() - t0);
      if (!ok(res.status, res.body)) {
        failures += 1;
        firstFailure ||= `${res.status} ${res.body.slice(0, 200)}`;
      }
    }
  };
  const start = performance.now();
  try {
    await Promise.all(connections.map(worker));
  } finally {
    for (const c of connections) c.close();
  }
  const seconds = Math.max((performance.now() - start) / 1000, 1e-9);
  if (failures > 0) log(`  ${failures} failed, e.g. ${firstFailure}`);
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    clients,
    requests: requests.length,
    seconds,
    perSecond: requests.length / seconds,
    p50: at(0.5),
    p99: at(0.99),
    failures,
  };
}

/** One directory process; every replica checks signatures against the same PUBLIC_URL. */
async function startDirectory(
  mastodon: DevMastodon,
  redis: RedisHandle,
  publicUrl: string,
  port: number,
): Promise<{ url: URL; child: ChildProcess }> {
  const server = fileURLToPath(new URL("./server.ts", import.meta.url));
  const nodeOptions = (env.BENCH_SERVER_NODE_OPTIONS ?? "").split(" ").filter(Boolean);
  const child = spawn(
    process.execPath,
    [...nodeOptions, "--conditions=mastodon-mls-source", "--import", "tsx", server],
    {
      env: {
        PATH: env.PATH,
        HOST: "127.0.0.1",
        PORT: String(port),
        PUBLIC_URL: publicUrl,
        MASTODON_URL: mastodon.url,
        INSTANCE_DOMAIN: DOMAIN,
        STORE: "redis",
        REDIS_URL: redis.url,
        REDIS_PREFIX: PREFIX,
        ...BENCH_LIMITS,
        SWEEP_INTERVAL_SECONDS: "0",
        WORKERS,
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve((JSON.parse(line) as { listening: string }).listening);
    });
    child.once("exit", (code) => reject(new Error(`the directory exited with ${code}`)));
  });
  return { url: new URL(url), child };
}

function redisBenchmark(port: number): Promise<{ set: number; get: number } | string> {
  const bin = env.REDIS_BENCHMARK_BIN ?? "redis-benchmark";
  return new Promise((resolve) => {
    execFile(
      bin,
      ["-h", "127.0.0.1", "-p", String(port), "-t", "set,get", "-n", "100000", "-c", "64", "-q"],
      { timeout: 120_000 },
      (err, stdout) => {
        if (err) {
          resolve(`redis-benchmark could not run (${(err as NodeJS.ErrnoException).code ?? err.message})`);
          return;
        }
        // "SET: 98039.22 requests per second, p50=0.327 msec" (the progress lines end in \r).
        const rate = (name: string) => {
          const m = new RegExp(`${name}: ([0-9.]+) requests per second`).exec(stdout.replaceAll("\r", "\n"));
          return m ? Number(m[1]) : NaN;
        };
        resolve({ set: rate("SET"), get: rate("GET") });
      },
    );
  });
}

function cpuModel(): string {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    return line?.split(":")[1]?.trim() ?? os.cpus()[0]?.model ?? "unknown";
  } catch {
    return os.cpus()[0]?.model ?? "unknown";
  }
}

const shares = (cpu: CpuShares | undefined) =>
  cpu ? [cpu.directory, cpu.redis, cpu.client].map((x) => `${Math.round(x * 100)}%`).join(" / ") : "";

/** CPU microseconds per request of each process: the figure that load on the machine disturbs least. */
const perRequest = (r: LevelResult) =>
  r.cpu
    ? [r.cpu.seconds.directory, r.cpu.seconds.redis, r.cpu.seconds.client]
        .map((s) => Math.round((s * 1e6) / r.requests))
        .join(" / ")
    : "";

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function main(): Promise<void> {
  const started = new Date();
  const load = os.loadavg();
  log(
    `machine: ${os.availableParallelism()} cores, ${cpuModel()}, load average ${load.map((l) => l.toFixed(2)).join(" ")}`,
  );
  const [redis, mastodon] = await Promise.all([
    startRedis({ mode: "process" }),
    createDevMastodon({ domain: DOMAIN, logLevel: "silent" }),
  ]);
  const replicas: { url: URL; child: ChildProcess }[] = [];
  try {
    const ports = await Promise.all(Array.from({ length: PROCESSES }, () => freePort()));
    const publicUrl = `http://127.0.0.1:${ports[0]!}`;
    for (const port of ports) replicas.push(await startDirectory(mastodon, redis, publicUrl, port));
    const bases = replicas.map((r) => r.url);
    const base = bases[0]!;
    const pids = { directory: replicas.map((r) => r.child.pid!), redis: redis.pid };
    log(`directory at ${bases.map((b) => b.href).join(", ")}, redis at ${redis.url}`);

    // Accounts with one registered device each.
    const devices: Device[] = [];
    for (let i = 0; i < ACCOUNTS; i++) {
      const username = `bench${i}`;
      mastodon.createAccount({ username });
      const token = mastodon.issueToken({ username, scopes: "read write" });
      devices.push(await makeDevice(`${username}@${DOMAIN}`, token));
    }
    const registerAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    for (const d of devices) {
      const res = await send(base, registerAgent, {
        method: "PUT",
        path: `/v1/devices/${d.deviceId}`,
        headers: { authorization: `Bearer ${d.token}`, "content-type": "application/json" },
        body: JSON.stringify({ certificate: toBase64url(d.certificate) }),
      });
      if (res.status !== 201) throw new Error(`registration failed: ${res.status} ${res.body}`);
    }
    registerAgent.destroy();

    // Uploads: every KeyPackage generated before the clock starts.
    const uploads: LevelResult[] = [];
    for (const clients of LEVELS) {
      log(`generating ${UPLOADS * UPLOAD_BATCH} KeyPackages for ${clients} client(s)…`);
      const requests: Request[] = [];
      for (let i = 0; i < UPLOADS; i++) {
        const d = devices[i % devices.length]!;
        const kps = await keyPackages(d, UPLOAD_BATCH);
        requests.push({
          method: "POST",
          path: `/v1/devices/${d.deviceId}/keypackages`,
          headers: { authorization: `Bearer ${d.token}`, "content-type": "application/json" },
          body: JSON.stringify({ key_packages: kps.map(toBase64url) }),
        });
      }
      const [result, cpu] = await measured(pids, () => runLevel(bases, clients, requests, (s) => s === 200));
      result.cpu = cpu;
      uploads.push(result);
      log(`uploads, ${clients} client(s): ${fmt(result.perSecond, 1)}/s`);
    }

    // Claims: the targets get enough ordinary KeyPackages that every timed claim takes the ordinary
    // path. They are seeded straight into Redis (copies of one real KeyPackage of each device under
    // fresh refs): generating tens of thousands would only measure the load generator's CPU.
    const totalClaims = CLAIMS * LEVELS.length;
    const perTarget = Math.ceil(totalClaims / devices.length) + 10;
    log(`seeding ${perTarget * devices.length} KeyPackages for the claims…`);
    const seedConnection = connectRedis(redis.url, silentLogger());
    try {
      const store = new RedisDirectoryStore(seedConnection, PREFIX, { keyPackagesPerDevice: 10_000_000 });
      const now = Math.floor(Date.now() / 1000);
      for (const d of devices) {
        const [real] = await keyPackages(d, 1);
        for (let done = 0; done < perTarget; done += 500) {
          const batch = Array.from({ length: Math.min(500, perTarget - done) }, () => ({
            ref: toBase64url(new Uint8Array(randomBytes(32))),
            keyPackage: real!,
            notAfter: now + 30 * 86400,
          }));
          const res = await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: batch }, now);
          if (!res.ok) throw new Error(`seeding failed: ${res.reason}`);
        }
      }
    } finally {
      await seedConnection.quit();
    }

    // Requesters from another instance, one per client; every claim signed before the clock starts.
    const requesters = await Promise.all(
      Array.from({ length: ACCOUNTS }, (_, i) => makeDevice(`requester${i}@elsewhere.test`, "")),
    );
    const claims: LevelResult[] = [];
    for (const clients of LEVELS) {
      log(`signing ${CLAIMS} claims for ${clients} client(s)…`);
      const requests: Request[] = [];
      for (let i = 0; i < CLAIMS; i++) {
        const requester = requesters[i % clients]!;
        const target = devices[(i * 7 + Math.floor(i / devices.length)) % devices.length]!;
        const body = JSON.stringify({ ciphersuite: 1, accounts: [target.acct] });
        const authorization = await signRequest(
          { certificate: requester.certificate, signKey: requester.key.signKey },
          {
            method: "POST",
            origin: publicUrl,
            pathAndQuery: "/v1/claims",
            body: new TextEncoder().encode(body),
          },
        );
        requests.push({
          method: "POST",
          path: "/v1/claims",
          headers: { authorization, "content-type": "application/json" },
          body,
        });
      }
      const [result, cpu] = await measured(pids, () =>
        runLevel(bases, clients, requests, (s, body) => s === 200 && body.includes('"last_resort":false')),
      );
      result.cpu = cpu;
      claims.push(result);
      log(`claims, ${clients} client(s): ${fmt(result.perSecond, 1)}/s`);
    }

    log("redis-benchmark…");
    const raw = await redisBenchmark(redis.port);

    // The report.
    const top = claims[claims.length - 1]!;
    const lines = [
      "",
      `key-package directory benchmark — ${started.toISOString()}`,
      `machine: ${os.availableParallelism()} cores (${cpuModel()}), load average at start ${load.map((l) => l.toFixed(2)).join(" ")}; node ${process.version}`,
      `directory: ${PROCESSES} process(es)${WORKERS === "1" ? "" : ` of WORKERS=${WORKERS}`} on one Redis, rate limits ${RATE_LIMITS === "on" ? "counted (maxima above this run's traffic)" : "off"}, LOG_LEVEL=warn`,
      `uploads: ${UPLOADS} requests of ${UPLOAD_BATCH} KeyPackages per level; claims: ${CLAIMS} requests per level, one account (one device) each`,
      "",
      "| clients | uploads/s | KeyPackages uploaded/s | upload p50 / p99 ms | claims/s | claim p50 / p99 ms | CPU during claims: directory / redis / load generator | CPU µs per claim: directory / redis / load generator |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...LEVELS.map((clients, i) => {
        const u = uploads[i]!;
        const c = claims[i]!;
        return `| ${clients} | ${fmt(u.perSecond, 1)} | ${fmt(u.perSecond * UPLOAD_BATCH)} | ${fmt(u.p50, 1)} / ${fmt(u.p99, 1)} | ${fmt(c.perSecond)} | ${fmt(c.p50, 2)} / ${fmt(c.p99, 2)} | ${shares(c.cpu)} | ${perRequest(c)} |`;
      }),
      "",
      `CPU is the share of one core each process used during the claims (${os.availableParallelism()} cores in all, shared with whatever else runs), and its CPU time per claim.`,
      "",
    ];
    let ratio: number | null = null;
    if (typeof raw === "string") {
      lines.push(`${raw}: no raw Redis rate, no ratio.`);
    } else {
      ratio = top.perSecond / raw.set;
      lines.push(
        `redis-benchmark -t set,get -n 100000 -c 64 on the same Redis: SET ${fmt(raw.set)}/s, GET ${fmt(raw.get)}/s`,
        `claims/s at ${top.clients} clients ÷ raw SET/s = ${fmt(top.perSecond)} ÷ ${fmt(raw.set)} = ${(ratio * 100).toFixed(1)}% (target ≥ 25%: ${ratio >= 0.25 ? "met" : "missed"})`,
      );
    }
    const failures = [...uploads, ...claims].reduce((n, r) => n + r.failures, 0);
    if (failures > 0) lines.push(`${failures} requests failed (see above); their rates are not comparable.`);
    console.log(lines.join("\n"));
    const perLevel = (results: LevelResult[], scale = 1) =>
      Object.fromEntries(results.map((r) => [String(r.clients), Math.round(r.perSecond * scale * 10) / 10]));
    console.log(
      JSON.stringify({
        bench: "directory",
        date: started.toISOString(),
        directory_processes: PROCESSES,
        directory_workers: WORKERS,
        rate_limits: RATE_LIMITS,
        cores: os.availableParallelism(),
        cpu: cpuModel(),
        load_average: load.map((l) => Math.round(l * 100) / 100),
        uploads_per_s: perLevel(uploads),
        keypackages_uploaded_per_s: perLevel(uploads, UPLOAD_BATCH),
        upload_batch: UPLOAD_BATCH,
        claims_per_s: perLevel(claims),
        claim_p99_ms: Object.fromEntries(
          claims.map((r) => [String(r.clients), Math.round(r.p99 * 100) / 100]),
        ),
        claim_cpu_share: Object.fromEntries(
          claims.map((r) => [
            String(r.clients),
            r.cpu && {
              directory: Math.round(r.cpu.directory * 100) / 100,
              redis: Math.round(r.cpu.redis * 100) / 100,
              client: Math.round(r.cpu.client * 100) / 100,
            },
          ]),
        ),
        claim_cpu_us: Object.fromEntries(
          claims.map((r) => [
            String(r.clients),
            r.cpu && {
              directory: Math.round((r.cpu.seconds.directory * 1e6) / r.requests),
              redis: Math.round((r.cpu.seconds.redis * 1e6) / r.requests),
              client: Math.round((r.cpu.seconds.client * 1e6) / r.requests),
            },
          ]),
        ),
        redis_set_per_s: typeof raw === "string" ? null : Math.round(raw.set),
        redis_get_per_s: typeof raw === "string" ? null : Math.round(raw.get),
        claims_to_set_ratio: ratio === null ? null : Math.round(ratio * 1000) / 1000,
        target_ratio: 0.25,
        failures,
      }),
    );
  } finally {
    await Promise.all(
      replicas.map(async ({ child }) => {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }),
    );
    await Promise.all([mastodon.close(), redis.stop()]);
  }
}

await main();
