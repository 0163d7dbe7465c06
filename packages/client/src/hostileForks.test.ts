import { statSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { toBase64url } from "@mastodon-mls/protocol";
import { createCommit, encodeMlsMessage } from "ts-mls";
import { afterAll, beforeAll, expect, it } from "vitest";
import { main } from "./cli/main.js";
import { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { recreatePlan } from "./groups/recreate.js";
import { capturedIo } from "./testSupport/cliIo.js";
import {
  FAST_RETRY,
  newClient,
  startInstance,
  stopInstance,
  type Instance,
} from "./testSupport/instances.js";
import { StaticResolver } from "./transport/resolver.js";

// Fork notices invented by the hub (found by an audit): one naming another sender for a commit this
// device sent itself made it blame an innocent member (and `recreateGroup` leave them out); a stream of
// notices for made-up epochs grew the group record without bound (1,500 notices: group.json 1.1 → 450 KB).
// Commits made up by the hub: one labelled as bob's, which no member can process, made the device that
// got it blame bob; and a notice naming bob as the sender of a commit of carol's was believed (the device
// kept no record of others' commits). docs/protocol.md "Forks".

/** Forwards to the real hub; adds `inject` to its next inbox answer. */
class InjectingProxy {
  private server: Server | undefined;
  url = "";
  target = "";
  inject: Record<string, unknown>[] = [];
  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const t = new URL(this.target);
        const out = request(
          {
            host: t.hostname,
            port: t.port,
            method: req.method,
            path: req.url,
            headers: { ...req.headers, host: t.host },
          },
          (ans) => {
            const parts: Buffer[] = [];
            ans.on("data", (c: Buffer) => parts.push(c));
            ans.on("end", () => {
              let body = Buffer.concat(parts);
              if (req.url?.startsWith("/v1/inbox") && ans.statusCode === 200 && this.inject.length > 0) {
                const json = JSON.parse(body.toString("utf8")) as { items: unknown[]; cursor: string };
                json.items.push(...this.inject.map((i) => ({ ...i, cursor: json.cursor })));
                this.inject = [];
                body = Buffer.from(JSON.stringify(json));
              }
              res.writeHead(ans.statusCode ?? 502, { "content-type": "application/json" });
              res.end(body);
            });
          },
        );
        out.end(Buffer.concat(chunks));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

const proxy = new InjectingProxy();
let a: Instance;
let resolver: StaticResolver;
beforeAll(async () => {
  await proxy.start();
  a = await startInstance("a.test", { deliveryEnv: { PUBLIC_URL: proxy.url } });
  proxy.target = a.urls.delivery;
  resolver = new StaticResolver({ "a.test": { ...a.urls, delivery: proxy.url, mastodon: a.mastodon.url } });
});
afterAll(async () => {
  await stopInstance(a);
  await proxy.stop();
});

const forkedBy = (events: DmEvent[], acct: string) =>
  events.filter((e) => e.type === "group_forked" && e.sender.acct === acct);
const ctxOf = (c: MlsDmClient) => (c as unknown as { ctx: DeviceContext }).ctx;

async function trio(n: string) {
  const [alice, bob, carol] = await Promise.all(
    ["alice", "bob", "carol"].map((u) => newClient(a, `${u}${n}`, resolver)),
  );
  const { groupId: g } = await alice!.createGroup([`@bob${n}@a.test`, `@carol${n}@a.test`]);
  for (let i = 0; i < 3; i++) for (const c of [bob!, carol!, alice!]) await c.sync();
  expect([alice!, bob!, carol!].map((c) => c.epoch(g))).toEqual([3, 3, 3]);
  return { alice: alice!, bob: bob!, carol: carol!, g };
}

/** The commit that ended each epoch of the group, as the hub recorded it: hash and sending device. */
function winners(g: string, epochs: number): Promise<{ epoch: number; hash: string; sender: string }[]> {
  const store = a.delivery.context.store;
  return Promise.all(
    Array.from({ length: epochs }, (_, epoch) =>
      store.winningCommit(g, epoch).then((w) => ({ epoch, ...w! })),
    ),
  );
}

/** A `forked` notice of the hub's making. */
const notice = (g: string, epoch: number, hash: string, sender: string, reporter: string) => ({
  kind: "forked",
  group_id: g,
  seq: 0,
  epoch,
  commit_hash: hash,
  commit_seq: 0,
  sender,
  reporter,
  reason: "processing_failed",
});

it(
  "a notice naming another sender for this device's own commit is ignored: nobody is blamed or left out",
  { timeout: 60_000 },
  async () => {
    const { alice, bob, carol, g } = await trio("1");
    const own = ctxOf(alice).groups.get(g)!.record.promoted![0]!; // alice's own add ended epoch 0
    proxy.inject = [notice(g, 0, own, bob.deviceId, carol.deviceId)];
    const events = await alice.sync();
    expect(forkedBy(events, "bob1@a.test")).toEqual([]);
    expect(events).toContainEqual(expect.objectContaining({ type: "error", operation: "fork notice" }));
    expect(alice.groups().find((x) => x.groupId === g)!.condition).toBe("ok");
    expect((await alice.recreateGroup(g)).without).not.toContain("bob1@a.test");
  },
);

it(
  "a notice naming bob as the sender of a commit this device processed, signed by carol, is ignored: nobody is blamed or left out (FORK-3)",
  { timeout: 60_000 },
  async () => {
    const { bob, carol, g, ...rest } = await trio("5");
    // Opened again: what it processed is read from disk.
    const alice = await MlsDmClient.open(rest.alice.dir, { services: resolver, retry: FAST_RETRY });
    const carols = (await winners(g, 3)).find((w) => w.sender === carol.deviceId)!;
    proxy.inject = [notice(g, carols.epoch, carols.hash, bob.deviceId, carol.deviceId)];
    const events = await alice.sync();
    expect(events.filter((e) => e.type === "group_forked")).toEqual([]);
    expect(events).toContainEqual({
      type: "error",
      groupId: g,
      operation: "fork notice",
      message:
        `the hub says the commit that ended epoch ${carols.epoch} was sent by bob5@a.test, but this device ` +
        "processed it, signed by carol5@a.test: ignored",
    });
    expect(alice.groups().find((x) => x.groupId === g)!.condition).toBe("ok");
    expect(recreatePlan(ctxOf(alice), g).without).toEqual([]);
  },
);

it(
  "a notice about a commit this device processed is believed only when hash and signer match; another hash for that epoch is the hub's word (FORK-3, FORK-4)",
  { timeout: 60_000 },
  async () => {
    const { alice, bob, carol, g } = await trio("6");
    const commits = await winners(g, 3);
    const bobs = commits.find((w) => w.sender === bob.deviceId)!;
    const carols = commits.find((w) => w.sender === carol.deviceId)!;
    // The hub says bob forked the group with a commit this device never got for carol's epoch: it showed
    // members different commits.
    proxy.inject = [notice(g, carols.epoch, "x".repeat(43), bob.deviceId, carol.deviceId)];
    let events = await alice.sync();
    expect(events).toContainEqual(
      expect.objectContaining({
        type: "error",
        operation: "fork notice",
        message: expect.stringContaining("it showed members different commits"),
      }),
    );
    expect(events).toContainEqual(
      expect.objectContaining({ type: "group_forked", epoch: carols.epoch, senderProven: false }),
    );
    expect(alice.groups().find((x) => x.groupId === g)!.advice).toContain(
      "the hub says bob6@a.test sent it; this device did not process that commit and cannot confirm it",
    );
    expect(recreatePlan(ctxOf(alice), g)).toMatchObject({ without: [], keptUnproven: ["bob6@a.test"] });
    // bob's own commit, named as his: proven, and he is left out by default.
    proxy.inject = [notice(g, bobs.epoch, bobs.hash, bob.deviceId, carol.deviceId)];
    events = await alice.sync();
    expect(events).toContainEqual(
      expect.objectContaining({ type: "group_forked", epoch: bobs.epoch, senderProven: true }),
    );
    expect(recreatePlan(ctxOf(alice), g)).toMatchObject({ without: ["bob6@a.test"], keptUnproven: [] });
  },
);

it(
  "a commit the hub made up and labelled as bob's makes the device stuck, but names bob as the hub's word only and keeps him when it re-creates the group (FORK-1, FORK-2)",
  { timeout: 60_000 },
  async () => {
    const { bob, carol, g } = await trio("4");
    // What a hub can make: bob's commit for this epoch (here built from his state, never posted), with one
    // byte of its signature changed — the hub holds no member's key, so it cannot sign one.
    const state = ctxOf(bob).groups.get(g)!.state!;
    const built = await createCommit({ state, cipherSuite: ctxOf(bob).cs }, { wireAsPublicMessage: true });
    if (built.commit.wireformat !== "mls_public_message") throw new Error("not a PublicMessage");
    built.commit.publicMessage.auth.signature[0]! ^= 0x80;
    const seq = (await a.delivery.context.store.groupStatus(g))!.seq + 1;
    proxy.inject = [
      {
        kind: "message",
        group_id: g,
        seq,
        epoch: 3,
        sender: bob.deviceId,
        message: toBase64url(encodeMlsMessage(built.commit)),
      },
    ];
    const events = await carol.sync();
    expect(events).toContainEqual({
      type: "group_forked",
      groupId: g,
      epoch: 3,
      commitSeq: seq,
      sender: { acct: "bob4@a.test", deviceId: bob.deviceId },
      senderProven: false,
      reporter: { acct: "carol4@a.test", deviceId: carol.deviceId },
      reason: "processing_failed",
      stuck: true,
    });
    const health = carol.groups().find((x) => x.groupId === g)!;
    expect(health.condition).toBe("stuck");
    expect(health.advice).toContain("the hub says bob4@a.test sent it; its signature did not verify");
    // Re-creating keeps bob by default, and says whom it kept that the hub named (FORK-2).
    expect(recreatePlan(ctxOf(carol), g)).toEqual({
      accts: ["alice4@a.test", "bob4@a.test"],
      without: [],
      keptUnproven: ["bob4@a.test"],
    });
    expect(recreatePlan(ctxOf(carol), g, ["bob4@a.test"])).toMatchObject({
      without: ["bob4@a.test"],
      keptUnproven: [],
    });
    const io = capturedIo();
    const map = { "a.test": { ...a.urls, delivery: proxy.url, mastodon: a.mastodon.url } };
    const code = await main(["--dir", carol.dir, "--services-map", JSON.stringify(map), "recreate", g], io);
    expect(code, io.stderr.join("\n")).toBe(0);
    expect(io.stdout).toContain(
      "  kept bob4@a.test: the hub says they sent a commit that forked the group, which this device " +
        "cannot confirm (to leave them out: --without bob4@a.test)",
    );
    expect(io.stdout.join("\n")).toMatch(/^ {2}added bob4@a\.test /m);
  },
);

it("fork notices cannot grow the group's record without bound", { timeout: 120_000 }, async () => {
  const { alice, bob, g } = await trio("3");
  const file = join(alice.dir, "groups", g, "group.json");
  const before = statSync(file).size;
  proxy.inject = Array.from({ length: 300 }, (_, i) =>
    notice(g, 1000 + i, "x".repeat(43), bob.deviceId, bob.deviceId),
  );
  await alice.sync();
  const forks = alice.groups().find((x) => x.groupId === g)!.forks;
  expect(forks).toHaveLength(64);
  // The newest are kept.
  expect(Math.min(...forks.map((f) => f.epoch))).toBe(1000 + 300 - 64);
  expect(statSync(file).size - before).toBeLessThan(64 * 400);
});
