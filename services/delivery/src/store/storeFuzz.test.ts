import { afterAll, beforeAll, describe, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import type { InboxItem } from "@mastodon-mls/protocol";
import { ackCursor, readInbox, type DeliveredStreams } from "../inbox.js";
import { decodeCursor } from "../cursor.js";
import { leafOf, placeAdds } from "../roster.js";
import { MemoryDeliveryStore } from "./memory.js";
import { RedisDeliveryStore } from "./redis.js";
import type { DeliveryStore, MemberRecord } from "./types.js";

// Both stores driven by the same random sequence of operations (adds, refused and failed commits,
// removals, departures, paged reads, acknowledgements over HTTP's path and a stream's, stale cursors, and
// "crashes": steps left out, such as the group's half of an acknowledgement), compared outcome by outcome;
// after every step every device with a stretch must be indexed, and after a final drain every device must
// have processed every Welcome, message and `removed` of every stretch it did not leave. A seed that fails
// prints its whole log. More: FUZZ_SEEDS=200 FUZZ_BASE=1 FUZZ_STEPS=250 npx vitest run src/store/storeFuzz.test.ts

const redisHandle = useRedis();
let redis: Redis;
beforeAll(() => {
  redis = connectRedis(redisHandle().url, silentLogger());
});
afterAll(async () => {
  await redis.quit();
});

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const member = (n: string): MemberRecord => ({ device: `dev-${n}`, acct: `${n}@a.test` });
const DEVICES = ["bob", "carol"];
const opts = (limit: number) => ({ limit, maxBytes: 1 << 20 });

interface Stretch {
  group: string;
  from: number;
  until: number | null;
  abandoned: boolean;
}

interface DeviceModel {
  processed: Set<string>;
  cursors: string[];
  delivered: DeliveredStreams | undefined;
}

async function run(seed: number, steps: number, prefix: string) {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const mem = new MemoryDeliveryStore();
  const red = new RedisDeliveryStore(redis, prefix);
  const stores: DeliveryStore[] = [mem, red];
  const groups = ["g1", "g2"];
  const log: string[] = [];
  const stretches = new Map<string, Stretch[]>(); // device -> stretches
  const models = new Map<string, DeviceModel[]>(); // device -> per store
  const all = ["alice", ...DEVICES];
  for (const d of all) {
    stretches.set(d, []);
    models.set(
      d,
      [0, 1].map(() => ({ processed: new Set(), cursors: [], delivered: undefined })),
    );
  }
  let tokenN = 0;
  const both = async <T>(f: (s: DeliveryStore, i: number) => Promise<T>, what: string): Promise<T> => {
    const out: (T | { threw: string })[] = [];
    for (let i = 0; i < 2; i++) {
      try {
        out.push(await f(stores[i]!, i));
      } catch (e) {
        out.push({
          threw:
            e instanceof Error
              ? `${e.constructor.name}:${(e as { code?: string }).code ?? e.message}`
              : String(e),
        });
      }
    }
    const norm = (x: unknown): unknown =>
      JSON.parse(
        JSON.stringify(x ?? null, (k, v: unknown) =>
          k === "event" || k === "announced" ? undefined : v instanceof Map ? [...v] : v,
        ),
      ) as unknown;
    if (JSON.stringify(norm(out[0])) !== JSON.stringify(norm(out[1]))) {
      throw new Error(
        `seed ${seed}: stores differ at ${what}\n${log.join("\n")}\nmemory: ${JSON.stringify(norm(out[0]))}\nredis:  ${JSON.stringify(norm(out[1]))}`,
      );
    }
    if (out[0] && typeof out[0] === "object" && "threw" in (out[0] as object)) {
      const t = (out[0] as { threw: string }).threw;
      throw new Error(`seed ${seed}: ${what} threw ${t}\n${log.join("\n")}`);
    }
    return out[0] as T;
  };
  for (const g of groups) {
    await both((s) => s.beginAdd("dev-alice", g, "c" + g, 10), "reserve");
    await both((s) => s.createGroup({ groupId: g, creator: member("alice"), at: 1 }), "create");
    await both((s) => s.endAdd("dev-alice", g, "c" + g), "endcreate");
    stretches.get("alice")!.push({ group: g, from: 0, until: null, abandoned: false });
  }

  const itemKey = (i: InboxItem) =>
    i.kind === "invitation" ? "invitation" : `${i.group_id}/${i.kind}/${"seq" in i ? i.seq : ""}`;

  async function readAndAck(d: string, mode: number) {
    const limit = 1 + Math.floor(r() * 4);
    const pages = await both(
      (s) => readInbox(s, { device: `dev-${d}`, acct: undefined }, undefined, opts(limit)),
      `read ${d}`,
    );
    const page0 = pages;
    for (const it of page0.items) {
      if (it.kind === "behind_retention")
        throw new Error(`seed ${seed}: behind_retention for ${d}\n${log.join("\n")}`);
    }
    if (page0.items.length === 0) return;
    // Which cursor to ack: the page's (all processed), or one item's (processed up to it).
    const k = mode === 0 ? page0.items.length - 1 : Math.floor(r() * page0.items.length);
    const cursor = k === page0.items.length - 1 && mode === 0 ? undefined : page0.items[k]!.cursor;
    for (let i = 0; i < 2; i++) {
      const m = models.get(d)![i]!;
      for (const it of page0.items.slice(0, k + 1)) m.processed.add(itemKey(it));
      m.cursors.push(page0.items[k]!.cursor);
      if (!page0.more) m.delivered = { reached: page0.reached, streamGroups: page0.streamGroups };
    }
    const ackWhat = cursor === undefined ? page0.cursor : decodeCursor(cursor);
    const crash = r();
    if (crash < 0.1) {
      // Crash between the device's cursor and the group's record.
      log.push(`ack ${d} crash-after-advance ${JSON.stringify([...ackWhat])}`);
      await both((s) => s.advanceCursor(`dev-${d}`, ackWhat), "advance");
      return;
    }
    const fast = r() < 0.3 && !page0.more;
    log.push(`ack ${d} ${fast ? "fast" : "slow"} ${JSON.stringify([...ackWhat])}`);
    await both(
      (s, i) =>
        ackCursor(
          s,
          { device: `dev-${d}`, acct: undefined },
          ackWhat,
          fast ? models.get(d)![i]!.delivered : undefined,
        ),
      `ack ${d}`,
    );
  }

  for (let step = 0; step < steps; step++) {
    const op = r();
    const g = pick(groups);
    const d = pick(DEVICES);
    const dev = `dev-${d}`;
    const snap = (await mem.loadGroup(g))!;
    const leaf = leafOf(snap, dev);
    const inRoster = [...snap.roster.values()].some((m) => m.device === dev);
    if (op < 0.18) {
      // Add d (if it is not in the roster at all).
      if (inRoster) continue;
      const token = `t${++tokenN}`;
      const refused = r() < 0.2;
      const skipEnd = r() < 0.1;
      log.push(`add ${d} to ${g}${refused ? " (refused)" : ""}${skipEnd ? " (no end)" : ""}`);
      await both((s) => s.beginAdd(dev, g, token, 1000), "begin");
      const adds = placeAdds(snap.roster, [], [member(d)]);
      const out = await both(
        (s) =>
          s.commit(g, {
            expectedEpoch: refused ? snap.epoch + 7 : snap.epoch,
            sender: "dev-alice",
            senderLeaf: 0,
            message: Uint8Array.of(step),
            hash: `h${step}`,
            at: 1000 + step,
            removes: [],
            adds,
            welcome: Uint8Array.of(9, step),
          }),
        "commit add",
      );
      if (out.ok) stretches.get(d)!.push({ group: g, from: out.seq, until: null, abandoned: false });
      if (skipEnd) continue;
      await both((s) => s.endAdd(dev, g, token), "end");
      if (!out.ok) await both((s) => s.forgetDeviceGroup(dev, g), "forget after refusal");
      else await both((s) => s.indexIfMember(dev, g), "indexIfMember");
    } else if (op < 0.3) {
      // Remove d's leaf (also a departed one).
      const at = [...snap.roster].find(([, m]) => m.device === dev)?.[0];
      if (at === undefined) continue;
      log.push(`remove ${d} from ${g} (leaf ${at})`);
      const out = await both(
        (s) =>
          s.commit(g, {
            expectedEpoch: snap.epoch,
            sender: "dev-alice",
            senderLeaf: 0,
            message: Uint8Array.of(step),
            hash: `h${step}`,
            at: 1000 + step,
            removes: [at],
            removedDevices: [dev],
            adds: [],
            welcome: undefined,
          }),
        "commit remove",
      );
      if (out.ok && leaf !== undefined) {
        const last = stretches
          .get(d)!
          .filter((s) => s.group === g)
          .at(-1);
        if (last && last.until === null && !last.abandoned) last.until = out.seq;
      }
    } else if (op < 0.35) {
      if (r() < 0.5) continue;
      log.push(`depart ${d} from ${g}`);
      const skipForget = r() < 0.3;
      await both((s) => s.depart(g, dev), "depart");
      for (const s of stretches.get(d)!) if (s.group === g) s.abandoned = true;
      if (!skipForget) await both((s) => s.forgetDeviceGroup(dev, g), "forget after depart");
    } else if (op < 0.5) {
      const sender = r() < 0.7 ? "dev-alice" : dev;
      log.push(`append by ${sender} in ${g}`);
      await both(
        (s) =>
          s.append(g, {
            kind: "application",
            epoch: snap.epoch,
            sender,
            leaf: undefined,
            message: Uint8Array.of(step),
            at: 1000 + step,
            window: 2,
          }),
        "append",
      );
    } else if (op < 0.85) {
      const who = r() < 0.25 ? "alice" : d;
      log.push(`read ${who}`);
      await readAndAck(who, r() < 0.5 ? 0 : 1);
    } else if (op < 0.92) {
      // A stale cursor of this device's, acknowledged again (a late ack frame, a retried request).
      const who = r() < 0.25 ? "alice" : d;
      const m = models.get(who)![0]!;
      if (m.cursors.length === 0) continue;
      const c = pick(m.cursors);
      const fast = r() < 0.5;
      log.push(`stale ack ${who} ${fast ? "fast" : "slow"} ${JSON.stringify([...decodeCursor(c)])}`);
      await both(
        (s, i) =>
          ackCursor(
            s,
            { device: `dev-${who}`, acct: undefined },
            decodeCursor(c),
            fast ? models.get(who)![i]!.delivered : undefined,
          ),
        `stale ack ${who}`,
      ).catch((e) => {
        throw e;
      });
      // A stale `after`, too.
      await both(
        (s) =>
          readInbox(s, { device: `dev-${who}`, acct: undefined }, decodeCursor(c), opts(2)).then((p) =>
            p.items.map(itemKey),
          ),
        `stale after ${who}`,
      );
    } else {
      log.push(`settle ${d} ${g}`);
      await both((s) => s.forgetDeviceGroup(dev, g), "settle");
    }
    // Invariant: a device with a stretch is indexed.
    for (const s of stores) {
      for (const x of all) {
        for (const gg of groups) {
          const ms = await s.memberships(gg, `dev-${x}`);
          const idx = (await s.deviceGroups(`dev-${x}`)).numbers.has(gg);
          if (ms && !idx)
            throw new Error(
              `seed ${seed}: ${x} has stretches in ${gg} but no entry (${s.constructor.name})\n${log.join("\n")}`,
            );
        }
      }
    }
  }
  const stats = new Map<string, number>();
  for (const l of log) {
    const w = l
      .split(" ")
      .slice(0, 2)
      .join(" ")
      .replace(/(bob|carol|alice)/, "");
    stats.set(w, (stats.get(w) ?? 0) + 1);
  }
  if (process.env.FUZZ_STATS)
    console.log(seed, JSON.stringify([...stats]), [...stretches.values()].flat().length);
  // Drain: every device reads and acks everything.
  for (let round = 0; round < 30; round++) for (const d of all) await readAndAck(d, 0);
  for (const d of all) {
    const processed = models.get(d)![0]!.processed;
    for (const s of stretches.get(d)!) {
      if (s.abandoned) continue;
      const seq = (await mem.groupStatus(s.group))!.seq;
      const want: string[] = [];
      if (s.from > 0) want.push(`${s.group}/welcome/${s.from}`);
      // Log entries: messages (kinds message), any seq in (from, until ?? seq].
      for (let q = s.from + 1; q <= (s.until ?? seq); q++) want.push(`${s.group}/message/${q}`);
      if (s.until !== null) want.push(`${s.group}/removed/${s.until}`);
      const missing = want.filter((w) => !processed.has(w));
      if (missing.length > 0) {
        throw new Error(
          `seed ${seed}: ${d} missed ${missing.join(", ")} of stretch ${JSON.stringify(s)}\n${log.join("\n")}`,
        );
      }
    }
  }
}

// About half a second per seed.
describe("store fuzz: memory and Redis stores, step by step", () => {
  it("agree, index every member and lose nothing", async () => {
    const seeds = Number(process.env.FUZZ_SEEDS ?? 16);
    const base = Number(process.env.FUZZ_BASE ?? 1);
    for (let seed = base; seed < base + seeds; seed++) {
      await run(seed, Number(process.env.FUZZ_STEPS ?? 120), `${redisHandle().keyPrefix}fz${seed}:`);
    }
  }, 600_000);
});
