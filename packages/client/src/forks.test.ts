import { cipherSuite } from "@mastodon-mls/bridge";
import { toBase64url } from "@mastodon-mls/protocol";
import { createCommit, encodeMlsMessage, type CiphersuiteImpl, type ClientState } from "ts-mls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "./cli/main.js";
import type { Io } from "./cli/io.js";
import { UsageError } from "./cli/io.js";
import { MlsDmClient } from "./client.js";
import { ClientError } from "./errors.js";
import type { DmEvent } from "./events.js";
import { loadGroupState, type DeviceContext } from "./context.js";
import { encodeState, messageHash } from "./mls/codec.js";
import { leavesOf } from "./mls/leaves.js";
import { DeviceStore } from "./store/deviceStore.js";
import { acquireDeviceLock } from "./store/lock.js";
import {
  FAST_RETRY,
  newClient,
  resolverFor,
  startInstance,
  stopInstance,
  useTwoInstances,
  type Instance,
} from "./testSupport/instances.js";
import { linkDevice } from "./testSupport/linking.js";
import { settle as settleAll } from "./testSupport/settle.js";

// Forks and retention gaps (DESIGN §6, docs/decisions.md D5, D10) with real parts: two fake Mastodons, the
// real directories and delivery services, real ts-mls, MlsDmClients; the CLI runs in this process (main()).
//
// How a commit the hub accepts but one member cannot process is made: bob's client builds an ordinary
// self-update commit with real ts-mls, except that the HPKE encryption of the new path secrets works only
// towards alice's leaf key — every other recipient gets a ciphertext sealed to a stranger's key. That is
// what a buggy or malicious client of bob's would send. The hub can check the framing, signature,
// membership and screening rules (it does, and accepts it) but not HPKE ciphertexts; alice decrypts hers
// and moves on; carol's ts-mls cannot decrypt the path secret meant for her subtree and throws. The commit
// is put into bob's device directory as his pending commit, exactly as his client saves one before
// posting (commitPipeline.savePending), so bob's own client posts it, sees it accepted and adopts its state.
//
// Retention: a hub whose clock the test moves (RETENTION_SECONDS=60, the minimum) deletes what bob has
// not read; bob is told `behind_retention`.

const env = useTwoInstances();
/** The instances a describe block started besides a.test and b.test, for the CLI's services map. */
const running: Instance[] = [];

/** Syncs every client, in turn, until a full round brings no event (self-updates trigger more work). */
/** Every client synced until a whole round brings no event at all. */
const settle = (clients: MlsDmClient[]) => settleAll(clients, { rounds: 6, quietDespite: [] });

const ofType = <T extends DmEvent["type"]>(events: DmEvent[] | undefined, type: T) =>
  (events ?? []).filter((e): e is Extract<DmEvent, { type: T }> => e.type === type);

function texts(events: DmEvent[] | undefined): string[] {
  return ofType(events, "message").map((e) => `${e.from}: ${e.note.content}`);
}

/** A ciphersuite whose HPKE seals honestly only to `onlyTo`; anything else is sealed to a stranger's key. */
function sealingOnlyTo(cs: CiphersuiteImpl, onlyTo: Uint8Array): CiphersuiteImpl {
  const hpke = cs.hpke;
  const faulty = new Proxy(hpke, {
    get(target, prop) {
      if (prop === "seal") {
        const seal: typeof hpke.seal = async (publicKey, plaintext, info, aad) => {
          const raw = await target.exportPublicKey(publicKey);
          if (toBase64url(raw) === toBase64url(onlyTo)) return target.seal(publicKey, plaintext, info, aad);
          const stranger = await target.generateKeyPair();
          return target.seal(stranger.publicKey, plaintext, info, aad);
        };
        return seal;
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? (value as (...x: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { ...cs, hpke: faulty };
}

/**
 * Saves a commit built from the device's own group state as that device's pending commit — what its client
 * writes before posting one — under the directory's lock, telling other processes (the generation).
 */
async function plantPendingCommit(
  dir: string,
  groupId: string,
  build: (state: ClientState) => Promise<{ commit: Uint8Array; newState: ClientState }>,
): Promise<void> {
  const lock = await acquireDeviceLock(dir, { timeoutMs: 10_000 });
  try {
    const store = await DeviceStore.open(dir);
    const record = await store.readGroup(groupId);
    const state = (await loadGroupState(store, record!)).state!;
    const built = await build(state);
    await store.writePending(groupId, {
      intent: { kind: "update" },
      epoch: Number(state.groupContext.epoch),
      commitHash: messageHash(built.commit),
      commit: toBase64url(built.commit),
      welcome: null,
      newState: encodeState(built.newState),
      invitees: [],
    });
    store.bumpGeneration();
  } finally {
    await lock.release();
  }
}

async function expectRefusal(p: Promise<unknown>, code: string, text: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ClientError);
  expect((e as ClientError).code).toBe(code);
  expect((e as ClientError).message).toContain(text);
}

/** `mls-dm --dir <the client's> --services-map <both instances> …args` in this process. */
async function cli(c: MlsDmClient, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
    env: {},
    stdinIsTty: false,
    stderrIsTty: false,
    readLine: () => Promise.reject(new UsageError("no input")),
    readSecret: () => Promise.reject(new UsageError("no input")),
  };
  const map = Object.fromEntries(
    [env.a, env.b, ...running].map((i) => [i.domain, { ...i.urls, mastodon: i.mastodon.url }]),
  );
  const code = await main(["--dir", c.dir, "--services-map", JSON.stringify(map), ...args], io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("a commit one member cannot process (a fork)", () => {
  it("is reported once, announced to every member, blocks only the stuck device, and the group is re-created without its sender", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver);
    const bob = await newClient(a, "bob", resolver);
    let carol = await newClient(b, "carol", resolver);
    const { groupId: g } = await alice.createGroup(["@bob@a.test", "@carol@b.test"]);
    await settle([bob, carol, alice]);
    expect([alice, bob, carol].map((c) => c.epoch(g))).toEqual([3, 3, 3]);

    // bob's faulty self-update: honest towards alice only.
    const cs = await cipherSuite();
    await plantPendingCommit(bob.dir, g, async (state) => {
      const aliceKey = leavesOf(state.ratchetTree).find((l) => l.acct === "alice@a.test")!.node.hpkePublicKey;
      const r = await createCommit(
        { state, cipherSuite: sealingOnlyTo(cs, aliceKey) },
        { wireAsPublicMessage: true },
      );
      return { commit: encodeMlsMessage(r.commit), newState: r.newState };
    });
    expect(await bob.sync()).toEqual([]); // posted, accepted by the hub, adopted
    expect(bob.epoch(g)).toBe(4);
    const commitSeq = (await a.delivery.context.store.groupStatus(g))!.seq;

    expect(await alice.sync()).toEqual([]);
    expect(alice.epoch(g)).toBe(4);

    // carol cannot process it: the failure is shown, the group marked, the hub told — once.
    const carolFirst = await carol.sync();
    expect(ofType(carolFirst, "undecryptable")).toEqual([
      // HPKE could not open the path secret sealed to a stranger's key.
      {
        type: "undecryptable",
        groupId: g,
        seq: commitSeq,
        reason: expect.stringMatching(/^could not process: OpenError/),
      },
    ]);
    const forkEvent = {
      type: "group_forked",
      groupId: g,
      epoch: 3,
      commitSeq,
      sender: { acct: "bob@a.test", deviceId: bob.deviceId },
      // bob signed it (FORK-1): carol's fork names him as proven.
      senderProven: true,
      reporter: { acct: "carol@b.test", deviceId: carol.deviceId },
      reason: "processing_failed",
    };
    expect(ofType(carolFirst, "group_forked")).toEqual([{ ...forkEvent, stuck: true }]);
    expect(carol.epoch(g)).toBe(3);
    const hubView = (await a.delivery.context.store.groupStatus(g))!;
    expect(hubView.forks).toEqual([
      {
        seq: commitSeq + 1,
        epoch: 3,
        commitHash: expect.any(String),
        commitSeq,
        sender: bob.deviceId,
        reporter: carol.deviceId,
        reason: "processing_failed",
      },
    ]);

    // Every member hears of it once; the hub goes on ordering the group (D5).
    let events = await settle([alice, bob, carol]);
    expect(ofType(events.get(alice), "group_forked")).toEqual([{ ...forkEvent, stuck: false }]);
    expect(ofType(events.get(bob), "group_forked")).toEqual([{ ...forkEvent, stuck: false }]);
    expect(events.get(carol)).toEqual([]); // its own report coming back is not news
    expect(alice.groups().find((x) => x.groupId === g)).toMatchObject({
      condition: "forked",
      advice: expect.stringContaining(`mls-dm recreate ${g.slice(0, 8)}`),
    });
    expect(carol.groups().find((x) => x.groupId === g)).toMatchObject({
      condition: "stuck",
      forks: [{ epoch: 3, stuck: true, report: "done", sender: forkEvent.sender, senderProven: true }],
      advice: expect.stringContaining(
        `ask a member to give this device a fresh start (mls-dm readd ${g.slice(0, 8)} ${carol.deviceId.slice(0, 12)})`,
      ),
    });

    // The stuck device cannot send (nor commit); the others carry on. What carol cannot read any more is
    // shown to her, never dropped.
    await expectRefusal(
      carol.send(g, "anyone?"),
      "group_stuck",
      "could not process the commit of bob@a.test that ended epoch 3",
    );
    await expectRefusal(carol.selfUpdate(g), "group_stuck", "give this device a fresh start");
    const after = await alice.send(g, "alice, after the fork");
    events = await settle([alice, bob, carol]);
    expect(texts(events.get(bob))).toEqual(["alice@a.test: alice, after the fork"]);
    expect(events.get(carol)).toEqual([
      {
        type: "undecryptable",
        groupId: g,
        seq: after.seq,
        reason: expect.stringContaining("could not process the commit that ended epoch 3"),
      },
    ]);

    // Persisted: a restarted client is still stuck, and neither reprocesses nor reports again.
    carol = await MlsDmClient.open(carol.dir, { services: resolver, retry: FAST_RETRY });
    expect(await carol.sync()).toEqual([]);
    expect(carol.groups().find((x) => x.groupId === g)?.condition).toBe("stuck");
    expect((await a.delivery.context.store.groupStatus(g))!.forks).toHaveLength(1);

    // The CLI shows it.
    const carolGroups = await cli(carol, ["groups", "--no-sync"]);
    expect(carolGroups.code).toBe(0);
    expect(carolGroups.out).toMatch(
      new RegExp(`^${g}  epoch 3  .*\\n  STUCK: this device could not process`, "m"),
    );
    const aliceMembers = await cli(alice, ["members", g.slice(0, 8)]);
    expect(aliceMembers.code).toBe(0);
    expect(aliceMembers.out).toMatch(/^FORKED: carol@b\.test could not process the commit of bob@a\.test/m);
    const refused = await cli(carol, ["send", g, "hello?"]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain("cannot read or send in this group any more");

    const help = await cli(carol, ["recreate", "--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toContain("Usage: mls-dm recreate [options] <group>");
    expect(help.out).toContain("--without <accts...>");
    expect(help.out).toContain("By default the accounts whose commit forked the group");

    // carol, stuck, re-creates the group: without bob by default, from her view of the members.
    const recreated = await cli(carol, ["recreate", g.slice(0, 8)]);
    expect(recreated.code, recreated.err).toBe(0);
    const newId = new RegExp(`^Re-created group ${g} as ([A-Za-z0-9_-]{22})$`, "m").exec(recreated.out)?.[1];
    expect(newId).toBeDefined();
    expect(recreated.out).toContain("\n  without bob@a.test\n");
    expect(recreated.out).toMatch(/^ {2}added alice@a\.test \(device [A-Za-z0-9_-]{12}\)$/m);
    expect(recreated.out).toContain(
      `leave it once everyone has moved: mls-dm --dir ${carol.dir} leave ${g.slice(0, 8)}`,
    );

    events = await settle([alice, carol, bob]);
    // alice is told which group it re-creates: carol's invitation said so, and carol, who added her, is a
    // member of that group as alice knows it (D21).
    expect(ofType(events.get(alice), "joined")).toEqual([
      { type: "joined", groupId: newId, hub: expect.any(String), replaces: g },
    ]);
    expect(alice.groups().find((x) => x.groupId === g)?.replacedBy).toBe(newId);
    expect(alice.groups().find((x) => x.groupId === newId)?.replaces).toBe(g);
    const aliceList = await cli(alice, ["groups", "--no-sync"]);
    expect(aliceList.out).toMatch(new RegExp(`^${g}  epoch 4  .*\\(re-created as ${newId}\\)$`, "m"));
    expect(aliceList.out).toMatch(new RegExp(`^${newId}  epoch \\d+  .*\\(re-creates ${g}\\)$`, "m"));
    expect(ofType(events.get(bob), "joined")).toEqual([]);
    for (const c of [alice, carol]) {
      expect(
        c
          .members(newId!)
          .map((m) => m.acct)
          .sort(),
      ).toEqual(["alice@a.test", "carol@b.test"]);
    }
    await carol.send(newId!, "carol, in the new group");
    await alice.send(newId!, "alice, in the new group");
    events = await settle([alice, carol, bob]);
    expect(texts(events.get(alice))).toEqual(["carol@b.test: carol, in the new group"]);
    expect(texts(events.get(carol))).toEqual(["alice@a.test: alice, in the new group"]);
    expect(events.get(bob)).toEqual([]);
    await carol.refresh();
    expect(carol.groups().find((x) => x.groupId === g)?.replacedBy).toBe(newId);

    // alice (not stuck) re-creates it too, naming whom to leave out; --json.
    const viaJson = await cli(alice, ["recreate", g, "--without", "@bob@a.test", "--json"]);
    expect(viaJson.code, viaJson.err).toBe(0);
    const report = JSON.parse(viaJson.out) as Record<string, unknown>;
    expect(report).toEqual({
      groupId: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
      previous: g,
      without: ["bob@a.test"],
      keptUnproven: [],
      added: [{ acct: "carol@b.test", deviceId: carol.deviceId }],
      refused: [],
    });
    const groupsJson = await cli(alice, ["groups", "--json", "--no-sync"]);
    expect(JSON.parse(groupsJson.out)).toContainEqual(
      expect.objectContaining({ groupId: g, condition: "forked", replacedBy: report.groupId }),
    );
    // carol joins alice's re-creation too, told it re-creates g; her own stays the one g points to.
    events = await settle([carol, alice]);
    expect(ofType(events.get(carol), "joined")).toEqual([
      { type: "joined", groupId: report.groupId, hub: expect.any(String), replaces: g },
    ]);
    expect(carol.groups().find((x) => x.groupId === g)?.replacedBy).toBe(newId);

    // A claim from someone who was not in g links nothing: dave's client names g in the Welcome of a group
    // of his that adds alice (as if he had re-created it).
    const dave = await newClient(a, "dave", resolver);
    const { groupId: daves } = await dave.createGroup([]);
    const daveCtx = (dave as unknown as { ctx: DeviceContext }).ctx;
    daveCtx.group(daves).record.replaces = g;
    await dave.addMembers(daves, ["@alice@a.test"]);
    events = await settle([alice, dave]);
    expect(ofType(events.get(alice), "joined")).toEqual([
      { type: "joined", groupId: daves, hub: expect.any(String) },
    ]);
    expect(alice.groups().find((x) => x.groupId === daves)?.replaces).toBeUndefined();
    expect(alice.groups().find((x) => x.groupId === g)?.replacedBy).toBe(report.groupId);

    // Leaving the old group from the stuck device drops its keys here without a proposal (one could only
    // be for an epoch the hub has left).
    expect(await carol.leave(g)).toEqual({ proposed: 0 });
    expect(carol.groups().find((x) => x.groupId === g)).toMatchObject({ status: "left", condition: "ok" });
  });
});

describe("behind retention", () => {
  let r: Instance;
  let now = Date.now();
  beforeAll(async () => {
    r = await startInstance("r.test", {
      deliveryEnv: { RETENTION_SECONDS: "60" },
      deliveryNow: () => now,
    });
    running.push(r);
  });
  afterAll(async () => {
    await stopInstance(r);
  });

  it("a device that missed deleted messages is told, cannot send, and is back once removed and re-added; the account's other device stays", async () => {
    const rr = resolverFor([r]);
    const alice = await newClient(r, "alice", rr);
    const bob = await newClient(r, "bob", rr);
    const phone = await linkDevice(bob, r, "bob", rr);
    const { groupId: g } = await alice.createGroup(["@bob@r.test"]);
    await settle([bob, phone, alice]);
    expect(alice.members(g).filter((m) => m.acct === "bob@r.test")).toHaveLength(2);

    // bob's laptop is away while alice talks and self-updates (his phone reads along); an hour later the
    // hub has deleted all of it.
    await alice.send(g, "one");
    await alice.selfUpdate(g);
    await alice.send(g, "two");
    expect(await alice.sync()).toEqual([]);
    expect(texts((await settle([phone])).get(phone))).toEqual(["alice@r.test: one", "alice@r.test: two"]);
    now += 61 * 60_000;
    expect((await r.delivery.sweep()).entries).toBeGreaterThanOrEqual(3);
    const deletedUpTo = (await r.delivery.context.store.groupStatus(g))!.base;

    const bobEvents = await bob.sync();
    expect(bobEvents).toEqual([{ type: "behind_retention", groupId: g, seq: deletedUpTo }]);
    const remedy = `mls-dm readd ${g.slice(0, 8)} ${bob.deviceId.slice(0, 12)}`;
    expect(bob.groups().find((x) => x.groupId === g)).toMatchObject({
      condition: "needs_readd",
      missedUpTo: deletedUpTo,
      advice: expect.stringContaining(remedy),
    });
    await expectRefusal(bob.send(g, "am I here?"), "needs_readd", "cannot catch up");
    const shown = await cli(bob, ["groups", "--no-sync"]);
    expect(shown.out).toContain(`\n  NEEDS RE-ADD: messages up to #${deletedUpTo} were deleted`);

    // Devices are named exactly (at least 8 characters), and not this device's own.
    await expectRefusal(alice.removeDevices(g, [alice.deviceId]), "bad_input", "cannot remove itself");
    await expectRefusal(alice.removeDevices(g, ["0000000000"]), "unknown_device", "no device 0000000000");
    await expectRefusal(alice.removeDevices(g, [bob.deviceId.slice(0, 7)]), "unknown_device", "at least");
    expect(await cli(alice, ["remove", g.slice(0, 8)])).toMatchObject({
      code: 1,
      err: expect.stringContaining("--device"),
    });

    // The remedy the advice names, run by alice: the laptop goes, the phone stays, the laptop comes back.
    const removed = await cli(alice, ["remove", g.slice(0, 8), "--device", bob.deviceId.slice(0, 12)]);
    expect(removed).toMatchObject({
      code: 0,
      out: `removed device ${bob.deviceId.slice(0, 12)} of bob@r.test`,
    });
    await alice.refresh(); // the CLI ran as another process would
    expect(alice.members(g).map((m) => m.deviceId)).toEqual([alice.deviceId, phone.deviceId]);
    expect((await alice.addMembers(g, ["bob@r.test"])).added).toEqual([
      expect.objectContaining({ acct: "bob@r.test", deviceId: bob.deviceId }),
    ]);
    const back = await settle([bob, phone, alice]);
    expect(ofType(back.get(bob), "removed_from_group")).toHaveLength(1);
    expect(ofType(back.get(bob), "joined")).toHaveLength(1);
    expect(ofType(back.get(phone), "removed_from_group")).toEqual([]);
    expect(bob.groups().find((x) => x.groupId === g)?.condition).toBe("ok");
    await bob.send(g, "back again");
    const heard = await settle([alice, phone, bob]);
    expect(texts(heard.get(alice))).toEqual(["bob@r.test: back again"]);
    expect(texts(heard.get(phone))).toEqual(["bob@r.test: back again"]);
  });

  it("the remedy the advice names re-adds the device in one commit (mls-dm readd); the account's other device stays", async () => {
    const rr = resolverFor([r]);
    const dora = await newClient(r, "dora", rr);
    const erin = await newClient(r, "erin", rr);
    const tablet = await linkDevice(erin, r, "erin", rr);
    const { groupId: g } = await dora.createGroup(["@erin@r.test"]);
    await settle([erin, tablet, dora]);
    await dora.send(g, "one");
    await dora.selfUpdate(g);
    expect(texts((await settle([tablet])).get(tablet))).toEqual(["dora@r.test: one"]);
    now += 61 * 60_000;
    await r.delivery.sweep();
    expect(ofType(await erin.sync(), "behind_retention")).toHaveLength(1);
    expect(erin.groups().find((x) => x.groupId === g)?.condition).toBe("needs_readd");

    // Named as `members` shows them; this device's own, or an unknown one, is refused and nothing changes.
    await expectRefusal(dora.readdDevices(g, [dora.deviceId]), "bad_input", "cannot remove itself");
    await expectRefusal(dora.readdDevices(g, ["0000000000"]), "unknown_device", "no device 0000000000");
    const epoch = dora.epoch(g);
    const run = await cli(dora, ["readd", g.slice(0, 8), erin.deviceId.slice(0, 12)]);
    expect(run).toMatchObject({
      code: 0,
      out: `re-added device ${erin.deviceId.slice(0, 12)} of erin@r.test`,
    });
    await dora.refresh(); // the CLI ran as another process would
    expect(dora.epoch(g)).toBe(epoch + 1); // one commit: the Remove and the Add together
    expect(
      dora
        .members(g)
        .map((m) => m.deviceId)
        .sort(),
    ).toEqual([dora.deviceId, erin.deviceId, tablet.deviceId].sort());

    const back = await settle([erin, tablet, dora]);
    expect(ofType(back.get(erin), "joined")).toHaveLength(1);
    expect(ofType(back.get(tablet), "removed_from_group")).toEqual([]);
    expect(erin.groups().find((x) => x.groupId === g)?.condition).toBe("ok");
    expect(erin.epoch(g)).toBe(dora.epoch(g)); // with the self-update every device makes on joining
    await erin.send(g, "fresh start");
    await dora.send(g, "welcome back");
    const heard = await settle([dora, tablet, erin]);
    expect(texts(heard.get(dora))).toEqual(["erin@r.test: fresh start"]);
    expect(texts(heard.get(tablet))).toEqual(["erin@r.test: fresh start", "dora@r.test: welcome back"]);
    expect(texts(heard.get(erin))).toEqual(["dora@r.test: welcome back"]);

    // A device that is fine may be re-added too: it cannot process the commit that replaces its leaf
    // (ts-mls 1.6.4 throws on it), and that is its removal, not a fork; the Welcome brings it back.
    const report = await dora.readdDevices(g, [tablet.deviceId.slice(0, 12)]);
    expect(report).toEqual({
      removed: [{ acct: "erin@r.test", deviceId: tablet.deviceId }],
      added: [{ acct: "erin@r.test", deviceId: tablet.deviceId }],
      refused: [],
      skipped: [],
    });
    const again = await settle([tablet, erin, dora]);
    // (and the statuses of the members, looked up anew after the join)
    const seen = again
      .get(tablet)
      ?.map((e) => e.type)
      .filter((t) => t !== "status_changed");
    expect(seen).toEqual(["removed_from_group", "joined"]);
    for (const c of [dora, erin]) expect(ofType(again.get(c), "group_forked")).toEqual([]);
    expect(tablet.groups().find((x) => x.groupId === g)).toMatchObject({ status: "active", condition: "ok" });
    await tablet.send(g, "tablet, renewed");
    const last = await settle([dora, erin, tablet]);
    expect(texts(last.get(dora))).toEqual(["erin@r.test: tablet, renewed"]);
    expect(texts(last.get(erin))).toEqual(["erin@r.test: tablet, renewed"]);
  });
});
