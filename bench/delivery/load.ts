// The delivery benchmark's load generator, in its own process (run.ts starts it; not a test).
//
// Sets up G groups of K member devices with real ts-mls: the first member creates the group on the hub
// and adds the others in one commit (real KeyPackages, real Welcome, screened by the hub), then encrypts a
// few real PrivateMessages at the new epoch. Members do not decrypt (the hub never does either; this
// process would be the bottleneck): every member submits those pre-generated messages on its own
// authenticated WebSocket (`submit` frames), at a fixed rate, open loop, spread over the replicas, and
// reads every group message pushed to it, checking sequence numbers: in order, none missing, none twice.
// Latency is from the submit frame leaving this process to the item arriving here, for every delivery.
//
// Environment: BENCH_URLS (replica URLs, comma-separated), BENCH_ORIGIN (their PUBLIC_URL),
// BENCH_GROUPS, BENCH_MEMBERS, BENCH_PHASES ("rate:seconds,…", messages/s over all devices),
// BENCH_VARIANTS (distinct messages per group, default 8), BENCH_ACK_MS (each device acknowledges
// what it received this often, default 1000, each at its own phase, as independent clients do;
// BENCH_ACK_TOGETHER=1: all devices at the same moment, a burst of 500 acknowledgements a second).
// BENCH_PROFILE_DIR: write a CPU profile of each phase there (load-<pid>-<phase>.cpuprofile).
// BENCH_LATENCY_TRACE: write each delivery's arrival time and latency to <value>-<phase>.txt.
// Output: JSON lines on stdout ({"ready"}, {"phase", "start"}, {"phase", "result"}); progress on stderr.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import WebSocket from "ws";
import { cipherSuite, generateDeviceKeyPackage, profileClientConfig } from "@mastodon-mls/bridge";
import { CIPHERSUITE_ID, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  encodeMlsMessage,
  type ClientState,
  type Proposal,
} from "ts-mls";
import { authorization, makeDevice, quantile, type BenchDevice } from "./common.js";

const env = process.env;
const URLS = (env.BENCH_URLS ?? "").split(",").filter(Boolean);
const ORIGIN = env.BENCH_ORIGIN ?? "";
const GROUPS = Number(env.BENCH_GROUPS ?? 50);
const MEMBERS = Number(env.BENCH_MEMBERS ?? 10);
const PHASES = (env.BENCH_PHASES ?? "5000:20,2500:20").split(",").map((p) => {
  const [rate, seconds] = p.split(":").map(Number);
  return { rate: rate!, seconds: seconds! };
});
const VARIANTS = Number(env.BENCH_VARIANTS ?? 8);
const ACK_MS = Number(env.BENCH_ACK_MS ?? 1000);
const ACK_TOGETHER = env.BENCH_ACK_TOGETHER === "1";
const DOMAIN = env.BENCH_DOMAIN ?? "bench.test";
const PROFILE_DIR = env.BENCH_PROFILE_DIR;
const profiler = PROFILE_DIR ? new Session() : undefined;
profiler?.connect();

const log = (...args: unknown[]) => console.error("[load]", ...args);
const emit = (o: unknown) => console.log(JSON.stringify(o));

interface Group {
  index: number;
  id: string;
  /** Pre-built prefix of every submit frame for this group, and its message variants (base64url). */
  variants: string[];
  /** seq → when the frame that got it was sent. */
  sentAt: Map<number, number>;
  maxSeq: number;
}

interface Member {
  device: BenchDevice;
  group: Group;
  socket: WebSocket;
  /** The last seq of the group received, in order. */
  last: number;
  /** Seqs skipped over (they may still come: out of order; or never: lost). */
  gaps: Set<number>;
  /** The last cursor received: as text, or as a span of the last frame (decoded when acknowledging). */
  cursor: string | undefined;
  cursorFrame: Buffer | undefined;
  cursorSpan: [number, number];
  acked: string | undefined;
  sent: number;
  sendTimes: Map<string, number>;
  nextAt: number;
  nextAck: number;
  variant: number;
}

interface Stats {
  /** WebSocket frames received (items frames and answers), to see how many items share a frame. */
  frames: number;
  itemFrames: number;
  accepted: number;
  refused: Record<string, number>;
  deliveries: number;
  duplicated: number;
  outOfOrder: number;
  firstSend: number;
  lastAccept: number;
  lastDelivery: number;
  received: Received;
}

const newStats = (): Stats => ({
  frames: 0,
  itemFrames: 0,
  accepted: 0,
  refused: {},
  deliveries: 0,
  duplicated: 0,
  outOfOrder: 0,
  firstSend: 0,
  lastAccept: 0,
  lastDelivery: 0,
  received: new Received(),
});
/** Every delivery of a phase (group, seq, arrival time), in typed arrays: no garbage, no big old-space arrays. */
class Received {
  n = 0;
  group = new Int32Array(1 << 16);
  seq = new Int32Array(1 << 16);
  at = new Float64Array(1 << 16);

  push(group: number, seq: number, at: number): void {
    if (this.n === this.at.length) {
      const grow = <T extends Int32Array | Float64Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.group = grow(this.group);
      this.seq = grow(this.seq);
      this.at = grow(this.at);
    }
    this.group[this.n] = group;
    this.seq[this.n] = seq;
    this.at[this.n++] = at;
  }
}

let stats = newStats();
let closing = false;

async function post(device: BenchDevice, url: string, path: string, json: unknown): Promise<unknown> {
  const body = new TextEncoder().encode(JSON.stringify(json));
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: authorization(device, { method: "POST", origin: ORIGIN, path, body }),
    },
    body: Buffer.from(body),
  });
  const answer = (await res.json()) as unknown;
  if (res.status !== 201) throw new Error(`${path}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** A group on the hub with all its members added, and real messages to send in it. */
async function setUpGroup(index: number, devices: BenchDevice[]): Promise<Group> {
  const suite = await cipherSuite();
  const config = profileClientConfig();
  const groupId = crypto.getRandomValues(new Uint8Array(16));
  const id = toBase64url(groupId);
  const packages = await Promise.all(
    devices.map((d) =>
      generateDeviceKeyPackage({
        identity: `acct:${d.acct}`,
        signatureKeyPair: d.keyPair,
        certificate: d.certificate,
      }),
    ),
  );
  const url = URLS[index % URLS.length]!;
  const creator = devices[0]!;
  let state: ClientState = await createGroup(
    groupId,
    packages[0]!.publicPackage,
    packages[0]!.privatePackage,
    [],
    suite,
    config,
  );
  await post(creator, url, "/v1/groups", { group_id: id, ciphersuite: CIPHERSUITE_ID });
  const adds: Proposal[] = packages
    .slice(1)
    .map((kp) => ({ proposalType: "add", add: { keyPackage: kp.publicPackage } }));
  const result = await createCommit(
    { state, cipherSuite: suite },
    { wireAsPublicMessage: true, ratchetTreeExtension: true, extraProposals: adds },
  );
  await post(creator, url, `/v1/groups/${id}/messages`, {
    message: toBase64url(encodeMlsMessage(result.commit)),
    welcome: toBase64url(
      encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: result.welcome! }),
    ),
  });
  state = result.newState;
  const variants: string[] = [];
  for (let v = 0; v < VARIANTS; v++) {
    const text = new TextEncoder().encode(`benchmark message ${v} of group ${index}: ${"x".repeat(60)}`);
    const m = await createApplicationMessage(state, text, suite);
    state = m.newState;
    variants.push(
      toBase64url(
        encodeMlsMessage({
          version: "mls10",
          wireformat: "mls_private_message",
          privateMessage: m.privateMessage,
        }),
      ),
    );
  }
  return { index, id, variants, sentAt: new Map(), maxSeq: 1 };
}

function onItems(member: Member, items: { kind: string; seq?: number; cursor: string }[], now: number): void {
  for (const item of items) {
    member.cursor = item.cursor;
    member.cursorFrame = undefined;
    if (item.kind !== "message" || item.seq === undefined) continue;
    onMessage(member, item.seq, now);
  }
}

const ITEMS_FRAME = Buffer.from('{"type":"items","items":[');
const KIND = Buffer.from('"kind":');
const KIND_MESSAGE = Buffer.from('"kind":"message"');
const SEQ = Buffer.from('"seq":');
const CURSOR = Buffer.from('"cursor":"');

/**
 * Reads an `items` frame holding only message items without JSON.parse (nor even a string), which
 * would build every item and its message: this process reads tens of thousands of items a second on the
 * same two cores as the replicas. Every value in such a frame is a number or base64url (ids, messages,
 * cursors), so no key pattern can occur inside a value. Returns false, reading nothing, for any frame
 * with another kind of item.
 */
function scanItems(member: Member, data: Buffer, now: number): boolean {
  let kinds = 0;
  for (let i = data.indexOf(KIND); i !== -1; i = data.indexOf(KIND, i + KIND.length)) {
    if (data.compare(KIND_MESSAGE, 0, KIND_MESSAGE.length, i, i + KIND_MESSAGE.length) !== 0) return false;
    kinds++;
  }
  let seqs = 0;
  for (let i = data.indexOf(SEQ); i !== -1; i = data.indexOf(SEQ, i + SEQ.length)) {
    let seq = 0;
    for (let j = i + SEQ.length, c = data[j]!; c >= 48 && c <= 57; c = data[++j]!) seq = seq * 10 + c - 48;
    onMessage(member, seq, now);
    seqs++;
  }
  if (seqs !== kinds) throw new Error(`an items frame with ${kinds} items and ${seqs} seqs`);
  // The frame's own cursor comes last: the position after all its items.
  const at = data.lastIndexOf(CURSOR) + CURSOR.length;
  member.cursorFrame = data;
  member.cursorSpan = [at, data.indexOf(0x22, at)];
  return true;
}

/** The member's last cursor as text. */
function cursorOf(member: Member): string | undefined {
  if (member.cursorFrame) {
    member.cursor = member.cursorFrame.toString("latin1", ...member.cursorSpan);
    member.cursorFrame = undefined;
  }
  return member.cursor;
}

function onMessage(member: Member, seq: number, now: number): void {
  if (seq === member.last + 1) member.last = seq;
  else if (seq <= member.last) {
    if (member.gaps.delete(seq)) stats.outOfOrder++;
    else stats.duplicated++;
  } else {
    for (let s = member.last + 1; s < seq; s++) member.gaps.add(s);
    member.last = seq;
  }
  if (seq <= 1) return; // the setup commit
  stats.deliveries++;
  stats.lastDelivery = now;
  stats.received.push(member.group.index, seq, now);
}

function connect(device: BenchDevice, group: Group, url: string): Promise<Member> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${url.replace(/^http/, "ws")}/v1/stream`, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
    });
    const member: Member = {
      device,
      group,
      socket,
      last: 0,
      gaps: new Set(),
      cursor: undefined,
      cursorFrame: undefined,
      cursorSpan: [0, 0],
      acked: undefined,
      sent: 0,
      sendTimes: new Map(),
      nextAt: 0,
      nextAck: 0,
      variant: 0,
    };
    socket.on("error", reject);
    socket.on("close", (code, reason) => {
      if (!closing) log(`stream of ${device.acct} closed: ${code} ${reason.toString()}`);
    });
    socket.on("message", (data: Buffer) => {
      const now = performance.now();
      stats.frames++;
      if (
        data.length > ITEMS_FRAME.length &&
        data.compare(ITEMS_FRAME, 0, ITEMS_FRAME.length, 0, ITEMS_FRAME.length) === 0
      ) {
        if (scanItems(member, data, now)) {
          stats.itemFrames++;
          return;
        }
      }
      const frame = JSON.parse(data.toString("utf8")) as {
        type: string;
        challenge?: string;
        items?: { kind: string; seq?: number; cursor: string }[];
        id?: string;
        seq?: number;
        error?: string;
        message?: string;
      };
      switch (frame.type) {
        case "challenge":
          socket.send(
            JSON.stringify({
              type: "auth",
              authorization: authorization(device, {
                method: "GET",
                origin: ORIGIN,
                path: "/v1/stream",
                body: fromBase64url(frame.challenge!),
              }),
            }),
          );
          return;
        case "ready":
          resolve(member);
          return;
        case "items":
          stats.itemFrames++;
          onItems(member, frame.items!, now);
          return;
        case "submitted": {
          const sentAt = member.sendTimes.get(frame.id!);
          member.sendTimes.delete(frame.id!);
          if (sentAt !== undefined) group.sentAt.set(frame.seq!, sentAt);
          group.maxSeq = Math.max(group.maxSeq, frame.seq!);
          stats.accepted++;
          stats.lastAccept = now;
          return;
        }
        case "refused":
          member.sendTimes.delete(frame.id!);
          stats.refused[frame.error!] = (stats.refused[frame.error!] ?? 0) + 1;
          return;
        case "error":
          log(`error frame for ${device.acct}: ${frame.error} ${frame.message}`);
          return;
      }
    });
  });
}

function send(member: Member, now: number): void {
  const id = String(++member.sent);
  const g = member.group;
  member.sendTimes.set(id, now);
  const message = g.variants[member.variant++ % g.variants.length]!;
  member.socket.send(`{"type":"submit","id":"${id}","group_id":"${g.id}","message":"${message}"}`);
}

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

async function runPhase(index: number, members: Member[], groups: Group[], rate: number, seconds: number) {
  stats = newStats();
  for (const g of groups) g.sentAt.clear();
  if (profiler) {
    await profiler.post("Profiler.enable");
    await profiler.post("Profiler.start");
  }
  loopDelay.reset();
  const cpu0 = process.cpuUsage();
  const interval = (1000 * members.length) / rate; // ms between two sends of one member
  const start = performance.now();
  const sentBefore = members.reduce((n, m) => n + m.sent, 0);
  for (const m of members) m.nextAt = start + Math.random() * interval;
  stats.firstSend = start;
  const end = start + seconds * 1000;
  emit({ phase: index, start: true });
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      const stopAt = Math.min(now, end);
      for (const m of members) {
        while (m.nextAt <= stopAt) {
          send(m, now);
          m.nextAt += interval;
        }
      }
      if (now >= end) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const sent = members.reduce((n, m) => n + m.sent, 0) - sentBefore;
  // Every answer, then every delivery of every accepted message.
  const answered = await until(() => members.every((m) => m.sendTimes.size === 0), 60_000);
  const drained = await until(
    () => members.every((m) => m.last >= m.group.maxSeq && m.gaps.size === 0),
    30_000,
  );
  const finished = performance.now();
  const cpu = process.cpuUsage(cpu0);
  if (profiler) {
    const { profile } = await profiler.post("Profiler.stop");
    writeFileSync(`${PROFILE_DIR}/load-${process.pid}-${index}.cpuprofile`, JSON.stringify(profile));
  }
  const eld = {
    p50: round(loopDelay.percentile(50) / 1e6),
    p99: round(loopDelay.percentile(99) / 1e6),
    max: round(loopDelay.max / 1e6),
  };
  emit({ phase: index, end: true });
  let lost = 0;
  for (const m of members) lost += Math.max(0, m.group.maxSeq - m.last) + m.gaps.size;
  const latencies: number[] = [];
  let unmatched = 0;
  const r = stats.received;
  for (let i = 0; i < r.n; i++) {
    const sentAt = groups[r.group[i]!]!.sentAt.get(r.seq[i]!);
    if (sentAt === undefined) unmatched++;
    else latencies.push(r.at[i]! - sentAt);
  }
  if (env.BENCH_LATENCY_TRACE) {
    // For looking at when the slow deliveries happen: arrival time (ms into the phase) and latency.
    const rows: string[] = [];
    for (let i = 0; i < r.n; i++) {
      const sentAt = groups[r.group[i]!]!.sentAt.get(r.seq[i]!);
      if (sentAt !== undefined)
        rows.push(`${(r.at[i]! - start).toFixed(1)} ${(r.at[i]! - sentAt).toFixed(2)}`);
    }
    writeFileSync(`${env.BENCH_LATENCY_TRACE}-${index}.txt`, rows.join("\n"));
  }
  const sorted = Float64Array.from(latencies).sort();
  const accepting = (stats.lastAccept - start) / 1000;
  const delivering = (stats.lastDelivery - start) / 1000;
  return {
    offered_per_s: rate,
    seconds,
    sent,
    accepted: stats.accepted,
    accepted_per_s: Math.round(stats.accepted / Math.max(accepting, seconds)),
    refused: stats.refused,
    deliveries: stats.deliveries,
    deliveries_per_s: Math.round(stats.deliveries / Math.max(delivering, seconds)),
    latency_ms: {
      p50: round(quantile(sorted, 0.5)),
      p99: round(quantile(sorted, 0.99)),
      max: round(sorted.at(-1) ?? NaN),
    },
    lost,
    duplicated: stats.duplicated,
    out_of_order: stats.outOfOrder,
    unmatched,
    answered,
    drained,
    wall_s: round((finished - start) / 1000),
    frames_received: stats.frames,
    items_per_frame: round(stats.deliveries / Math.max(1, stats.itemFrames)),
    // This process's own figures: its CPU per delivery read, and its event-loop delay, which would show
    // in every latency it measures.
    load_cpu_us_per_delivery: round((cpu.user + cpu.system) / Math.max(1, stats.deliveries)),
    load_eld_ms: eld,
  };
}

const round = (x: number) => Math.round(x * 100) / 100;
const loopDelay = monitorEventLoopDelay({ resolution: 2 });
loopDelay.enable();
// run.ts stops this process with SIGTERM once it reported: exit normally, so that --cpu-prof writes.
process.once("SIGTERM", () => process.exit(0));

async function main() {
  if (URLS.length === 0 || ORIGIN === "") throw new Error("BENCH_URLS and BENCH_ORIGIN are required");
  const t0 = performance.now();
  const devices = Array.from({ length: GROUPS }, (_, g) =>
    Array.from({ length: MEMBERS }, (_, k) => makeDevice(`g${g}m${k}@${DOMAIN}`)),
  );
  const groups: Group[] = [];
  for (let g = 0; g < GROUPS; g += 4) {
    groups.push(...(await Promise.all(devices.slice(g, g + 4).map((d, i) => setUpGroup(g + i, d)))));
  }
  log(`${GROUPS} groups of ${MEMBERS} set up in ${Math.round(performance.now() - t0)} ms`);
  const members: Member[] = [];
  for (let g = 0; g < GROUPS; g++) {
    members.push(
      ...(await Promise.all(
        devices[g]!.map((d, k) => connect(d, groups[g]!, URLS[(g * MEMBERS + k) % URLS.length]!)),
      )),
    );
  }
  // Everyone has the setup commit (or its Welcome) before the clock starts.
  await until(() => members.every((m) => cursorOf(m) !== undefined), 30_000);
  for (const m of members) m.last = 1;
  const ackStart = performance.now();
  for (const m of members) m.nextAck = ackStart + (ACK_TOGETHER ? ACK_MS : Math.random() * ACK_MS);
  const acker = setInterval(() => {
    const now = performance.now();
    for (const m of members) {
      if (m.nextAck > now) continue;
      m.nextAck += ACK_MS;
      const cursor = cursorOf(m);
      if (cursor !== undefined && cursor !== m.acked) {
        m.socket.send(JSON.stringify({ type: "ack", cursor }));
        m.acked = cursor;
      }
    }
  }, 10);
  emit({
    ready: {
      groups: GROUPS,
      members: MEMBERS,
      streams: members.length,
      setup_ms: Math.round(performance.now() - t0),
    },
  });
  for (let i = 0; i < PHASES.length; i++) {
    const { rate, seconds } = PHASES[i]!;
    log(`phase ${i}: ${rate} messages/s for ${seconds} s`);
    emit({ phase: i, result: await runPhase(i, members, groups, rate, seconds) });
  }
  clearInterval(acker);
  closing = true;
  for (const m of members) m.socket.close();
  emit({ done: true });
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
