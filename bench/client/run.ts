// `npm run bench:client`: what our client library costs on top of ts-mls (issue 6). Not a test.
//
// WHAT IS MEASURED. For groups of N = 32, 128 and 512 members, five operations, each timed twice on the
// same machine in the same run:
//   - "client": one real device (MlsDmClient, packages/client) doing it through its public API, with
//     everything it does: the serial queue and the directory's lock file, claims and member verification
//     where the operation needs them, building and encoding the MLS messages, signing the requests,
//     HTTP to the real directory and delivery service, and its encrypted file store (every file sealed
//     with XChaCha20-Poly1305, written atomically with fsync) — persistence included.
//   - "ts-mls": ts-mls 1.6.4 alone doing the same MLS operation, and encoding its output, on a copy of
//     the very state the client starts from (read back through the client's own store,
//     packages/client/src/testSupport/groupState.ts): same tree, same epoch, same leaf. Nothing else.
//     ts-mls runs with its own ciphersuite implementation (getCiphersuiteImpl). The client hands ts-mls
//     that implementation with Ed25519 through node:crypto and cached keys (bridge cipherSuite(), D14);
//     each raw operation is timed a second time with that one, so the client's overhead shows apart
//     from what the faster signatures gain ("ts-mls with the client's signatures").
// The operations, in a group of N members:
//   add          the N-th member: client `addMembers` (claim a KeyPackage from the directory, verify it
//                and the account online, commit, post commit + Welcome, post the invitation) vs ts-mls
//                `createCommit` with one Add (a KeyPackage made locally beforehand).
//   join         the N-th member joining: the new device's `sync({verification: "background"})` (fetch
//                the Welcome, join, check every leaf's certificate offline, save, and the self-update every
//                device does on joining, DESIGN §2) vs ts-mls `joinGroup` + `createCommit` with an update
//                path (the same MLS work; `joinGroup` alone is printed below the table). Two rows: until
//                that sync() returns, and until the online verification of the N members' accounts
//                (profile, device list), which it leaves running in the background (DESIGN §2), is done
//                too (`verificationSettled()`).
//   self-update  client `selfUpdate` vs ts-mls `createCommit` with no proposals (an update path).
//   message      client `send` of a short note (one ActivityStreams Note, padded, posted) vs ts-mls
//                `createApplicationMessage` of a payload of the same size, padded the same way; message m
//                of an epoch on both sides (until 2026-11-27 11:00 the raw side encrypted every message
//                from the epoch's first state, so each paid the derivation only a first message pays).
//   remove       back to N-1 members: client `removeMembers` vs ts-mls `createCommit` with one Remove.
// Network: the client's requests go to services in another process on loopback. Their time (the union
// of the request intervals, meters.ts) is shown apart, and the ratio is given both with it and without
// it ("excl. net" = client total minus the time spent waiting for answers). The time spent waiting on
// the disk (fsync, rename, …; meters.ts) is shown too; it is part of both client figures.
//
// HOW THE GROUPS ARE BUILT (not timed). One process runs a development Mastodon, the real directory and
// the real delivery service on their in-memory stores (services.ts; rate limits raised). N-2 "filler"
// accounts are set up as real devices (MlsDmClient.create: device list, profile proof, KeyPackages), but
// on plain files (protection "none") and never used again: they are leaves, and the hub keeps their
// inboxes. For each N a separate owner device (encrypted store) creates the group and adds the N-2
// fillers in one commit, so the group has N-1 members. Then, each cycle: a new joiner device (encrypted
// store) is created; owner adds it (add, N members), it syncs (join), owner catches up (untimed),
// self-update, messages, and owner removes it (remove, N-1 members). The owner and joiner directories
// use the test Argon2id parameters (insecureTestKdf: only unlocking is cheaper; the per-file encryption
// is the same); opening a directory is not part of any timed operation. A full GC runs before each timed
// operation (for both sides). Directories live under os.tmpdir() (its file system is printed).
// Limits of this set-up: the fillers never self-update, so most parent nodes of the tree stay blank (as
// in a group just created by one Add commit); ts-mls's own costs depend on that shape, and both sides
// start from the same state, so the comparison holds, but absolute ts-mls figures differ from a group
// whose members all updated. The owner's state grows over the first epochs (2 past epochs are kept),
// so early cycles save less than later ones; its encoded size is printed.
//
// Environment (all optional): BENCH_SIZES ("32,128,512"), BENCH_CYCLES (cycles per size, "8,6,3": each
// cycle is one add, join, self-update, remove and BENCH_MESSAGES messages), BENCH_MESSAGES (3),
// BENCH_KEEP (1: keep the device directories), BENCH_FILLER_CONCURRENCY (16), BENCH_PROFILE ("1": CPU
// profiles of the client's timed operations, summarised at the end — profile.ts; a directory: also
// saves each as .cpuprofile; the figures of such a run are slowed down by the profiler), BENCH_TRACE
// (operation names, e.g. "message,add", or "all": print every network and disk interval of those timed
// operations, with its start and duration), BENCH_SERVICES_PROFILE_DIR (a CPU profile of the services'
// process, written there when it stops).
//
// The machine is shared: besides wall-clock time, the CPU time of this process (user + system, all its
// threads: process.cpuUsage) is recorded per operation for both sides; it is less disturbed by other
// load on the machine. Raw ts-mls always runs first, on a state the client then starts from.
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import {
  cipherSuite,
  tsMlsCipherSuite,
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  paddingFor,
  profileClientConfig,
  signDeviceCertificate,
  type GeneratedKeyPackage,
} from "@mastodon-mls/bridge";
import { MlsDmClient, StaticResolver, buildCreateNote, type DmEvent } from "@mastodon-mls/client";
import { encodeCleartext } from "@mastodon-mls/protocol";
import {
  createApplicationMessage,
  createCommit,
  emptyPskIndex,
  encodeGroupState,
  encodeMlsMessage,
  joinGroup,
  type CiphersuiteImpl,
  type ClientState,
} from "ts-mls";
import { Meter, meterDisk, meterHttp } from "./meters.js";
import { OpProfiler } from "./profile.js";

const env = process.env;
const SIZES = (env.BENCH_SIZES ?? "32,128,512").split(",").map(Number);
const CYCLES_LIST = (env.BENCH_CYCLES ?? "8,6,3").split(",").map(Number);
const cyclesFor = (i: number) => CYCLES_LIST[Math.min(i, CYCLES_LIST.length - 1)]!;
const MESSAGES = Number(env.BENCH_MESSAGES ?? 3);
const KEEP = env.BENCH_KEEP === "1";
const FILLER_CONCURRENCY = Number(env.BENCH_FILLER_CONCURRENCY ?? 16);
const PASSPHRASE = "correct horse battery staple";
const TARGET = 1.2;
/** "1": profile the client's operations and print where their time goes; a directory: also save them. */
const PROFILE = env.BENCH_PROFILE;
const SERVICES_PROFILE_DIR = env.BENCH_SERVICES_PROFILE_DIR;
const TRACE = new Set((env.BENCH_TRACE ?? "").split(",").filter((op) => op !== ""));
const MESSAGE_TEXT = "Hello everyone, this is a short message of about the usual length of a chat line.";

// ---- helpers ----

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const min = (xs: readonly number[]) => (xs.length === 0 ? Number.NaN : Math.min(...xs));

function fsTypeOf(path: string): string {
  try {
    let best = { point: "", type: "?" };
    for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [, point, type] = line.split(" ");
      if (point === undefined || type === undefined) continue;
      const prefix = point.endsWith("/") ? point : `${point}/`;
      if ((path === point || path.startsWith(prefix)) && point.length > best.point.length)
        best = { point, type };
    }
    return `${best.type} (mounted at ${best.point})`;
  } catch {
    return "?";
  }
}

async function inBatches<T, R>(items: readonly T[], size: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size)
    out.push(...(await Promise.all(items.slice(i, i + size).map(f))));
  return out;
}

// ---- the services process ----

interface Urls {
  domain: string;
  mastodon: string;
  directory: string;
  delivery: string;
}

function startServices(): Promise<{
  urls: Urls;
  pid: number;
  accounts(names: string[]): Promise<string[]>;
  stop(): Promise<void>;
}> {
  const child = fork(fileURLToPath(new URL("services.ts", import.meta.url)), [], {
    execArgv: [
      "--conditions=mastodon-mls-source",
      "--import",
      "tsx",
      ...(SERVICES_PROFILE_DIR === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${SERVICES_PROFILE_DIR}`]),
    ],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let nextId = 0;
  const waiting = new Map<number, (tokens: string[]) => void>();
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`services process exited (${code})`)));
    child.on("message", (m: { ready?: Urls; id?: number; tokens?: string[] }) => {
      if (m.id !== undefined && m.tokens !== undefined) waiting.get(m.id)?.(m.tokens);
      if (m.ready === undefined) return;
      resolve({
        urls: m.ready,
        pid: child.pid!,
        accounts: (names) =>
          new Promise((done) => {
            const id = nextId++;
            waiting.set(id, (tokens) => {
              waiting.delete(id);
              done(tokens);
            });
            child.send({ id, accounts: names });
          }),
        stop: () =>
          new Promise((done) => {
            child.removeAllListeners("exit");
            child.once("exit", () => done());
            child.send({ stop: true });
          }),
      });
    });
  });
}

function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * packages/client/src/testSupport/groupState.ts, loaded at run time: the package exports only its public
 * API, and a static import of another project's source would break this project's rootDir (bench/tsconfig.json).
 */
type GroupStateReader = (groupId: string) => Promise<ClientState>;
async function openGroupStateReader(
  dir: string,
  opts: { passphrase: string; insecureTestKdf: boolean },
): Promise<GroupStateReader> {
  const url = new URL("../../packages/client/src/testSupport/groupState.ts", import.meta.url).href;
  const mod = (await import(url)) as {
    openGroupStateReader(
      dir: string,
      opts: { passphrase: string; insecureTestKdf: boolean },
    ): Promise<GroupStateReader>;
  };
  return mod.openGroupStateReader(dir, opts);
}

// ---- raw ts-mls ----

/** A device's KeyPackage made locally with the bridge, as our clients make theirs (certificate extension). */
async function rawKeyPackage(identity: string): Promise<GeneratedKeyPackage> {
  const account = await generateSigningKeyPair();
  const sig = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: sig.publicKey,
      notBefore: now - 60,
      notAfter: now + 86400,
    },
    account.signKey,
  );
  return generateDeviceKeyPackage({ identity, signatureKeyPair: sig, certificate });
}

/** The padding our client uses for a payload of this size (packages/client/src/mls/padding.ts). */
function applicationPaddingFor(bytes: number) {
  const varint = bytes < 0x40 ? 1 : bytes < 0x4000 ? 2 : 4;
  return paddingFor(varint + bytes + 2 + 64 - 1);
}

function leafIndexOf(state: ClientState, deviceId: string): number {
  for (let n = 0; n < state.ratchetTree.length; n += 2) {
    const node = state.ratchetTree[n];
    if (node?.nodeType === "leaf" && deviceIdText(node.leaf.signaturePublicKey) === deviceId) return n / 2;
  }
  throw new Error(`no leaf of ${deviceId}`);
}

// ---- results ----

type Op = "add" | "join" | "join+verify" | "self-update" | "message" | "message-live" | "remove";
const OPS: Op[] = ["join", "join+verify", "add", "remove", "self-update", "message", "message-live"];
const OP_TITLE: Record<Op, string> = {
  join: "join (to self-update done)",
  "join+verify": "join (until the online verification is done)",
  add: "add",
  remove: "remove",
  "self-update": "self-update",
  message: "one message",
  "message-live": "one message, listening (events() open: sent on its stream)",
};

interface Samples {
  raw: number[];
  /** ts-mls with the client's ciphersuite implementation (timeRaw). */
  rawOurs: number[];
  client: number[];
  net: number[];
  disk: number[];
  rawCpu: number[];
  clientCpu: number[];
  bytes: number[];
  requests: Record<string, number>;
  diskOps: Record<string, number>;
}

const results = new Map<string, Samples>();
const bareJoin = new Map<number, number[]>();
/** Encoded size of the owner's group state (what every save encodes and encrypts), per N. */
const stateBytes = new Map<number, number[]>();
const setupNotes: string[] = [];

function samples(n: number, op: Op): Samples {
  const key = `${n} ${op}`;
  let s = results.get(key);
  if (s === undefined) {
    s = {
      raw: [],
      rawOurs: [],
      client: [],
      net: [],
      disk: [],
      rawCpu: [],
      clientCpu: [],
      bytes: [],
      requests: {},
      diskOps: {},
    };
    results.set(key, s);
  }
  return s;
}

const meter = new Meter();

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

interface RawTiming<T> {
  ms: number;
  cpu: number;
  value: T;
  /** The same operation with the ciphersuite the client hands ts-mls (its Ed25519 through node:crypto). */
  ours: { ms: number; cpu: number };
}

let rawSuites: { tsMls: CiphersuiteImpl; ours: CiphersuiteImpl } | undefined;

async function timeOnce<T>(f: () => Promise<T>): Promise<{ ms: number; cpu: number; value: T }> {
  gc();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  return { ms: performance.now() - t0, cpu: cpuMs(process.cpuUsage(c0)), value };
}

/**
 * ts-mls alone, twice: with its own ciphersuite implementation ("ts-mls", the yardstick), then
 * with the one the client uses (ts-mls's, its signatures through node:crypto with cached keys: D14), so
 * the client's own overhead shows apart from what that gains. The value is the first run's.
 */
async function timeRaw<T>(f: (cs: CiphersuiteImpl) => Promise<T>): Promise<RawTiming<T>> {
  const { tsMls, ours } = rawSuites!;
  const plain = await timeOnce(() => f(tsMls));
  const fast = await timeOnce(() => f(ours));
  return { ...plain, ours: { ms: fast.ms, cpu: fast.cpu } };
}

interface ClientTiming<T> {
  value: T;
  t0: number;
  t1: number;
  c0: NodeJS.CpuUsage;
  c1: NodeJS.CpuUsage;
}

let profiler: OpProfiler | undefined;

async function timeClient<T>(key: string, f: () => Promise<T>): Promise<ClientTiming<T>> {
  gc();
  await profiler?.start();
  meter.start();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  const t1 = performance.now();
  const c1 = process.cpuUsage();
  meter.stop();
  await profiler?.stop(key);
  return { value, t0, t1, c0, c1 };
}

/** Records a raw timing and a client timing over [from, to] (CPU between c0 and c1). */
function record(
  n: number,
  op: Op,
  raw: { ms: number; cpu: number; ours: { ms: number } },
  from: number,
  to: number,
  c0: NodeJS.CpuUsage,
  c1: NodeJS.CpuUsage,
): void {
  const s = samples(n, op);
  s.raw.push(raw.ms);
  s.rawOurs.push(raw.ours.ms);
  s.rawCpu.push(raw.cpu);
  s.clientCpu.push(cpuMs({ user: c1.user - c0.user, system: c1.system - c0.system }));
  s.client.push(to - from);
  s.net.push(meter.busy(["service", "identity"], from, to));
  s.disk.push(meter.busy(["disk"], from, to));
  s.bytes.push(meter.bytesWritten(from, to));
  s.requests = meter.counts(["service", "identity"], from, to);
  s.diskOps = meter.counts(["disk"], from, to);
  if (TRACE.has(op) || TRACE.has("all")) {
    console.log(`trace N=${n} ${op}: ${(to - from).toFixed(2)} ms`);
    for (const line of meter.trace(from, to)) console.log(line);
  }
}

function problems(events: DmEvent[]): DmEvent[] {
  return events.filter((e) => ["error", "undecryptable", "refused", "invalid_member"].includes(e.type));
}

// ---- main ----

async function main(): Promise<void> {
  const started = new Date();
  const cpus = os.cpus();
  const machine = {
    cpu: cpus[0]?.model ?? "?",
    cores: cpus.length,
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    memory_gb: Math.round(os.totalmem() / 1024 ** 3),
    load_1m_before: Number(os.loadavg()[0]!.toFixed(2)),
  };
  const root = await mkdtemp(join(os.tmpdir(), "mls-bench-client-"));
  if (!KEEP) onFailure.push(() => rm(root, { recursive: true, force: true }));
  const fsType = fsTypeOf(root);
  console.log(`# bench:client — MlsDmClient vs raw ts-mls 1.6.4`);
  console.log(
    `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gb} GB, node ${machine.node}, ${machine.platform}`,
  );
  console.log(
    `load average before: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  console.log(`device directories: ${root} on ${fsType}`);
  console.log(
    `sizes ${SIZES.join(", ")}; cycles ${SIZES.map((_, i) => cyclesFor(i)).join(", ")}; ${MESSAGES} messages per cycle`,
  );

  if (PROFILE !== undefined && PROFILE !== "") {
    profiler = new OpProfiler(PROFILE === "1" ? undefined : PROFILE);
    await profiler.init();
    console.log(`profiling the client's operations (figures below are slowed down by it)`);
  }
  meterHttp(meter);
  await meterDisk(meter, "/proc/self/stat");
  const services = await startServices();
  onFailure.push(() => services.stop());
  const cpuServices0 = cpuSecondsOf(services.pid);
  const { urls } = services;
  const resolver = new StaticResolver({
    [urls.domain]: { directory: urls.directory, delivery: urls.delivery, mastodon: urls.mastodon },
  });
  rawSuites = { tsMls: await tsMlsCipherSuite(), ours: await cipherSuite() };
  const acctOf = (name: string) => `${name}@${urls.domain}`;

  const measuredDevice = async (name: string, token: string) =>
    MlsDmClient.create({
      dir: join(root, name),
      acct: acctOf(name),
      mastodonToken: token,
      protection: { kind: "passphrase", passphrase: PASSPHRASE },
      insecureTestKdf: true,
      services: resolver,
      keyPackages: 1,
      deviceName: name,
    });

  // Fillers: N-2 for the largest N; filler i is in every group with i < N-2.
  const maxN = Math.max(...SIZES);
  const fillerNames = Array.from({ length: maxN - 2 }, (_, i) => `m${String(i).padStart(4, "0")}`);
  const t0 = performance.now();
  const fillerTokens = await services.accounts(fillerNames);
  await inBatches(
    fillerNames.map((name, i) => ({ name, token: fillerTokens[i]!, i })),
    FILLER_CONCURRENCY,
    ({ name, token, i }) =>
      MlsDmClient.create({
        dir: join(root, name),
        acct: acctOf(name),
        mastodonToken: token,
        protection: { kind: "none" },
        services: resolver,
        keyPackages: Math.max(1, SIZES.filter((n) => i < n - 2).length),
        deviceName: name,
      }),
  );
  const fillerSetup = (performance.now() - t0) / 1000;
  setupNotes.push(`${fillerNames.length} filler devices set up in ${fillerSetup.toFixed(1)} s`);
  console.log(setupNotes.at(-1));

  for (const [sizeIndex, n] of SIZES.entries()) {
    const cycles = cyclesFor(sizeIndex);
    const ownerName = `owner${n}`;
    const joinerNames = Array.from({ length: cycles }, (_, c) => `joiner${n}_${c}`);
    const [ownerToken, ...joinerTokens] = await services.accounts([ownerName, ...joinerNames]);
    const owner = await measuredDevice(ownerName, ownerToken!);
    let t = performance.now();
    const created = await owner.createGroup(fillerNames.slice(0, n - 2).map(acctOf));
    if (created.refused.length > 0 || created.added.length !== n - 2) {
      throw new Error(
        `group of ${n}: ${created.added.length} added, refused ${JSON.stringify(created.refused)}`,
      );
    }
    const groupId = created.groupId;
    const firstSync = problems(await owner.sync());
    if (firstSync.length > 0) console.error(`owner${n} sync: ${JSON.stringify(firstSync)}`);
    setupNotes.push(
      `N=${n}: owner created the group and added ${n - 2} members in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    console.log(setupNotes.at(-1));
    const readState = await openGroupStateReader(owner.dir, {
      passphrase: PASSPHRASE,
      insecureTestKdf: true,
    });

    for (let c = 0; c < cycles; c++) {
      t = performance.now();
      const joiner = await measuredDevice(joinerNames[c]!, joinerTokens[c]!);
      const rawKp = await rawKeyPackage(`acct:raw${n}_${c}@${urls.domain}`);
      await owner.sync();

      // add: N-1 → N
      let state = await readState(groupId);
      stateBytes.set(n, [...(stateBytes.get(n) ?? []), encodeGroupState(state).byteLength]);
      const rawAdd = await timeRaw(async (cs) => {
        const r = await createCommit(
          { state, cipherSuite: cs },
          {
            extraProposals: [{ proposalType: "add", add: { keyPackage: rawKp.publicPackage } }],
            wireAsPublicMessage: true,
            ratchetTreeExtension: true,
          },
        );
        encodeMlsMessage(r.commit);
        encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: r.welcome! });
        return r;
      });
      const add = await timeClient(`N=${n} add`, () => owner.addMembers(groupId, [joiner.acct]));
      if (add.value.added.length !== 1) throw new Error(`add refused: ${JSON.stringify(add.value.refused)}`);
      record(n, "add", rawAdd, add.t0, add.t1, add.c0, add.c1);

      // join: the N-th member
      const rawJoin = await timeRaw((cs) =>
        joinGroup(
          rawAdd.value.welcome!,
          rawKp.publicPackage,
          rawKp.privatePackage,
          emptyPskIndex,
          cs,
          undefined,
          undefined,
          profileClientConfig(),
        ),
      );
      const rawJoinUpdate = await timeRaw(async (cs) => {
        const r = await createCommit(
          { state: rawJoin.value, cipherSuite: cs },
          { wireAsPublicMessage: true },
        );
        encodeMlsMessage(r.commit);
        return r;
      });
      // sync() in background mode returns once joined (self-update included); the member verification it
      // started goes on, and the second row waits for it too.
      const joined = await timeClient(`N=${n} join`, async () => {
        const events = await joiner.sync({ verification: "background" });
        const at = { t: performance.now(), cpu: process.cpuUsage() };
        await joiner.verificationSettled();
        return { events, at };
      });
      // The verification's own events (untimed): a further sync hands them out.
      const events = [...joined.value.events, ...(await joiner.sync())];
      if (!events.some((e) => e.type === "joined"))
        throw new Error(`joiner did not join: ${JSON.stringify(events)}`);
      const bad = problems(events);
      if (bad.length > 0) console.error(`joiner ${n}/${c}: ${JSON.stringify(bad)}`);
      const rawJoinTotal = {
        ms: rawJoin.ms + rawJoinUpdate.ms,
        cpu: rawJoin.cpu + rawJoinUpdate.cpu,
        ours: {
          ms: rawJoin.ours.ms + rawJoinUpdate.ours.ms,
          cpu: rawJoin.ours.cpu + rawJoinUpdate.ours.cpu,
        },
      };
      record(n, "join", rawJoinTotal, joined.t0, joined.value.at.t, joined.c0, joined.value.at.cpu);
      record(n, "join+verify", rawJoinTotal, joined.t0, joined.t1, joined.c0, joined.c1);
      bareJoin.set(n, [...(bareJoin.get(n) ?? []), rawJoin.ms]);

      // the owner processes the joiner's self-update (not timed)
      await owner.sync();

      // self-update
      state = await readState(groupId);
      const rawUpdate = await timeRaw(async (cs) => {
        const r = await createCommit({ state, cipherSuite: cs }, { wireAsPublicMessage: true });
        encodeMlsMessage(r.commit);
        return r;
      });
      const update = await timeClient(`N=${n} self-update`, () => owner.selfUpdate(groupId));
      record(n, "self-update", rawUpdate, update.t0, update.t1, update.c0, update.c1);

      // messages
      state = await readState(groupId);
      const payload = encodeCleartext(buildCreateNote(`acct:${owner.acct}`, MESSAGE_TEXT));
      const clientConfig = profileClientConfig(applicationPaddingFor(payload.byteLength));
      // Message m of the epoch on both sides: the raw state moves on with each message, as the client's
      // does (the first one derives the sender's ratchet from the secret tree, the next ones step it).
      let rawState: ClientState = { ...state, clientConfig };
      const timeMessages = async (op: "message" | "message-live") => {
        for (let m = 0; m < MESSAGES; m++) {
          const from = rawState;
          const rawMessage = await timeRaw(async (cs) => {
            const r = await createApplicationMessage(from, payload, cs);
            encodeMlsMessage({
              version: "mls10",
              wireformat: "mls_private_message",
              privateMessage: r.privateMessage,
            });
            return r;
          });
          rawState = { ...rawMessage.value.newState, clientConfig };
          const sent = await timeClient(`N=${n} ${op}`, () => owner.send(groupId, MESSAGE_TEXT));
          record(n, op, rawMessage, sent.t0, sent.t1, sent.c0, sent.c1);
        }
      };
      await timeMessages("message");

      // messages while the owner listens (events() open, as a chat application does): the client sends
      // them on the hub's stream (D6). Its own echoes are processed meanwhile, as they would be.
      const listening = new AbortController();
      const live = owner.events({ signal: listening.signal });
      // The joiner's message pushed to the owner proves the owner's stream is authenticated.
      const streamReady = (async () => {
        for (;;) {
          const r = await live.next();
          if (r.done === true) throw new Error("events() ended");
          if (r.value.type === "message" && r.value.groupId === groupId) return;
        }
      })();
      await joiner.send(groupId, MESSAGE_TEXT);
      await streamReady;
      const draining = (async () => {
        for await (const e of live) {
          if (e.type === "error" || e.type === "undecryptable")
            console.error(`owner live: ${JSON.stringify(e)}`);
        }
      })();
      await timeMessages("message-live");
      listening.abort();
      await draining;
      await owner.historyWritten();

      // remove: N → N-1
      state = await readState(groupId);
      const leaf = leafIndexOf(state, joiner.deviceId);
      const rawRemove = await timeRaw(async (cs) => {
        const r = await createCommit(
          { state, cipherSuite: cs },
          {
            extraProposals: [{ proposalType: "remove", remove: { removed: leaf } }],
            wireAsPublicMessage: true,
          },
        );
        encodeMlsMessage(r.commit);
        return r;
      });
      const removed = await timeClient(`N=${n} remove`, () => owner.removeMembers(groupId, [joiner.acct]));
      if (removed.value.removed.length !== 1) throw new Error("remove did nothing");
      record(n, "remove", rawRemove, removed.t0, removed.t1, removed.c0, removed.c1);

      console.log(
        `N=${n} cycle ${c + 1}/${cycles} (${((performance.now() - t) / 1000).toFixed(1)} s): ` +
          OPS.map((op) => {
            const s = samples(n, op);
            return `${op} ${s.raw.at(-1)!.toFixed(0)}/${s.client.at(-1)!.toFixed(0)}`;
          }).join(", ") +
          " ms (ts-mls/client)",
      );
    }
  }

  const servicesCpu = cpuSecondsOf(services.pid) - cpuServices0;
  await services.stop();
  if (!KEEP) await rm(root, { recursive: true, force: true });

  // ---- report ----
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const rows = [];
  console.log("");
  console.log(
    "| members | operation | ts-mls ms median (min) | client ms median (min) | ratio | network ms | client excl. net ms | ratio excl. net | disk wait ms | CPU ms ts-mls / client | target ≤ 1.2× met? total / excl. net | ts-mls with the client's signatures ms | ratio to it |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const n of SIZES) {
    for (const op of OPS) {
      const s = samples(n, op);
      if (s.raw.length === 0) continue;
      const excl = s.client.map((c, i) => c - s.net[i]!);
      const raw = median(s.raw);
      const client = median(s.client);
      const clientExcl = median(excl);
      const ratio = client / raw;
      const ratioExcl = clientExcl / raw;
      const rawOurs = median(s.rawOurs);
      const row = {
        members: n,
        operation: op,
        reps: s.raw.length,
        tsmls_ms: { median: raw, min: min(s.raw) },
        tsmls_client_signatures_ms: { median: rawOurs, min: min(s.rawOurs) },
        ratio_to_tsmls_client_signatures: client / rawOurs,
        client_ms: { median: client, min: min(s.client) },
        network_ms: median(s.net),
        client_excl_network_ms: { median: clientExcl, min: min(excl) },
        disk_wait_ms: median(s.disk),
        disk_kib_written: median(s.bytes) / 1024,
        disk_operations: s.diskOps,
        cpu_ms: { tsmls: median(s.rawCpu), client: median(s.clientCpu) },
        ratio,
        ratio_excl_network: ratioExcl,
        target_met: ratio <= TARGET,
        target_met_excl_network: ratioExcl <= TARGET,
        requests: s.requests,
      };
      rows.push(row);
      const yes = (b: boolean) => (b ? "yes" : "**no**");
      console.log(
        `| ${n} | ${OP_TITLE[op]} (×${s.raw.length}) | ${f(raw)} (${f(min(s.raw))}) | ${f(client)} (${f(min(s.client))}) | ` +
          `${ratio.toFixed(2)} | ${f(median(s.net))} | ${f(clientExcl)} (${f(min(excl))}) | ${ratioExcl.toFixed(2)} | ` +
          `${f(median(s.disk))} | ${f(median(s.rawCpu))} / ${f(median(s.clientCpu))} | ` +
          `${yes(row.target_met)} / ${yes(row.target_met_excl_network)} | ` +
          `${f(rawOurs)} (${f(min(s.rawOurs))}) | ${row.ratio_to_tsmls_client_signatures.toFixed(2)} |`,
      );
    }
  }
  console.log("");
  console.log(
    "ratio = client ÷ ts-mls (medians). network = waiting for HTTP answers (union of request intervals); " +
      "excl. net = client − network. disk wait = waiting for file operations (fsync, rename, …), part of " +
      "both client figures. CPU = user + system time of this process. Target: client ≤ 1.2 × ts-mls. " +
      "ts-mls is ts-mls 1.6.4 with its own ciphersuite implementation; the client hands ts-mls the same " +
      "one with Ed25519 through node:crypto (cached keys, docs/decisions.md D14), and the last two columns " +
      "time ts-mls with that one: the client's overhead apart from what it gains.",
  );
  console.log("");
  console.log("ts-mls `joinGroup` alone (the join rows compare with joinGroup + an update commit):");
  for (const n of SIZES) console.log(`  N=${n}: median ${f(median(bareJoin.get(n) ?? []))} ms`);
  console.log("Owner's group state, encoded (ts-mls encodeGroupState), before the add of each cycle:");
  for (const n of SIZES)
    console.log(`  N=${n}: median ${(median(stateBytes.get(n) ?? []) / 1024).toFixed(0)} KiB`);
  console.log(
    "Per client operation (last repetition): HTTP requests; file operations and bytes written (median):",
  );
  const list = (r: Record<string, number>) =>
    Object.entries(r)
      .map(([k, v]) => `${k} ×${v}`)
      .join(", ");
  for (const n of SIZES) {
    for (const op of OPS) {
      const s = samples(n, op);
      const requests = Object.values(s.requests).reduce((a, b) => a + b, 0);
      console.log(`  N=${n} ${op}: ${requests} requests — ${list(s.requests)}`);
      console.log(
        `  ${" ".repeat(String(n).length + 2)} ${op}: ${(median(s.bytes) / 1024).toFixed(0)} KiB written — ${list(s.diskOps)}`,
      );
    }
  }
  for (const note of setupNotes) console.log(`setup: ${note}`);
  if (profiler !== undefined) {
    console.log("");
    profiler.report();
  }
  console.log(
    `services process CPU: ${servicesCpu.toFixed(1)} s; load average after: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  console.log(`total: ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`);
  console.log("");
  const round = (x: number) => Number(x.toFixed(2));
  console.log(
    JSON.stringify({
      bench: "client",
      date: started.toISOString(),
      machine: { ...machine, load_1m_after: round(os.loadavg()[0]!), fs: fsType },
      sizes: SIZES,
      cycles: SIZES.map((_, i) => cyclesFor(i)),
      messages_per_cycle: MESSAGES,
      target_ratio: TARGET,
      results: rows.map((r) => ({
        ...r,
        tsmls_ms: { median: round(r.tsmls_ms.median), min: round(r.tsmls_ms.min) },
        tsmls_client_signatures_ms: {
          median: round(r.tsmls_client_signatures_ms.median),
          min: round(r.tsmls_client_signatures_ms.min),
        },
        ratio_to_tsmls_client_signatures: round(r.ratio_to_tsmls_client_signatures),
        client_ms: { median: round(r.client_ms.median), min: round(r.client_ms.min) },
        network_ms: round(r.network_ms),
        client_excl_network_ms: {
          median: round(r.client_excl_network_ms.median),
          min: round(r.client_excl_network_ms.min),
        },
        disk_wait_ms: round(r.disk_wait_ms),
        disk_kib_written: round(r.disk_kib_written),
        cpu_ms: { tsmls: round(r.cpu_ms.tsmls), client: round(r.cpu_ms.client) },
        ratio: round(r.ratio),
        ratio_excl_network: round(r.ratio_excl_network),
      })),
      group_state_kib: Object.fromEntries(
        SIZES.map((n) => [n, round(median(stateBytes.get(n) ?? []) / 1024)]),
      ),
      ts_mls_join_group_ms: Object.fromEntries(SIZES.map((n) => [n, round(median(bareJoin.get(n) ?? []))])),
      targets: {
        all_within_1_2x: rows.every((r) => r.target_met),
        all_within_1_2x_excl_network: rows.every((r) => r.target_met_excl_network),
      },
    }),
  );
}

/** What to undo when the run fails half-way (the services process, the device directories). */
const onFailure: (() => Promise<void>)[] = [];

main().then(
  () => process.exit(0),
  async (e: unknown) => {
    console.error(e);
    for (const undo of onFailure.reverse()) await undo().catch(() => undefined);
    process.exit(1);
  },
);
