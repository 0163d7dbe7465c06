import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { cipherSuite } from "@mastodon-mls/bridge";
import { encodeCleartext, fromBase64url } from "@mastodon-mls/protocol";
import {
  acceptAll,
  createApplicationMessage,
  emptyPskIndex,
  encodeMlsMessage,
  processMessage,
  type MLSMessage,
} from "ts-mls";
import { describe, expect, it } from "vitest";
import { buildCreateNote } from "./cleartext.js";
import { MlsDmClient } from "./client.js";
import type { DmEvent } from "./events.js";
import { decodeMessage } from "./mls/codec.js";
import { openGroupStateReader } from "./testSupport/groupState.js";
import { DeliveryClient } from "./transport/deliveryClient.js";
import { FAST_RETRY, newClient, useTwoInstances } from "./testSupport/instances.js";
import { settle as settleAll } from "./testSupport/settle.js";

// alice and bob on a.test, carol on b.test: two fake Mastodons, two directories, two delivery services.
// The group lives on a.test's hub; carol reaches it through the invitation on her own home service.

const env = useTwoInstances();

const reopen = (c: MlsDmClient) => MlsDmClient.open(c.dir, { services: env.resolver, retry: FAST_RETRY });

/** Syncs every client, in turn, until a full round brings no event (self-updates trigger more work). */
/** Every client synced until a whole round brings no event at all. */
const settle = (clients: MlsDmClient[]) => settleAll(clients, { rounds: 6, quietDespite: [] });

function texts(events: DmEvent[] | undefined): string[] {
  return (events ?? []).flatMap((e) => (e.type === "message" ? [`${e.from}: ${e.note.content}`] : []));
}

function noProblems(events: Map<MlsDmClient, DmEvent[]>): void {
  for (const [c, list] of events) {
    const bad = list.filter((e) => ["undecryptable", "refused", "error", "invalid_member"].includes(e.type));
    expect(bad, c.acct).toEqual([]);
  }
}

describe("three members on two instances", () => {
  it("create, join, talk, reopen, remove, self-update", async () => {
    const { a, b, resolver } = env;
    let alice = await newClient(a, "alice", resolver);
    let bob = await newClient(a, "bob", resolver);
    let carol = await newClient(b, "carol", resolver);

    const created = await alice.createGroup(["@bob@a.test", "@carol@b.test"]);
    expect(created.refused).toEqual([]);
    expect(created.added.map((x) => x.acct).sort()).toEqual(["bob@a.test", "carol@b.test"]);
    const groupId = created.groupId;

    let events = await settle([bob, carol, alice]);
    noProblems(events);
    expect(events.get(bob)!.some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
    expect(events.get(carol)!.map((e) => e.type)).toContain("invitation");
    expect(events.get(carol)!.some((e) => e.type === "joined" && e.hub === a.urls.delivery)).toBe(true);
    // creation, the add, and each joiner's self-update (DESIGN §2)
    for (const c of [alice, bob, carol]) expect(c.epoch(groupId)).toBe(3);
    expect(new Set([alice, bob, carol].map((c) => c.epochAuthenticator(groupId))).size).toBe(1);
    expect(
      bob
        .members(groupId)
        .map((m) => `${m.acct} ${m.status}${m.self ? " (self)" : ""}`)
        .sort(),
    ).toEqual(["alice@a.test verified", "bob@a.test verified (self)", "carol@b.test verified"]);

    // every client reopened from disk midway
    alice = await reopen(alice);
    bob = await reopen(bob);
    carol = await reopen(carol);

    await alice.send(groupId, "hello from alice");
    await bob.send(groupId, "hi, bob here");
    const carolSent = await carol.send(groupId, "carol says hi", {});
    events = await settle([alice, bob, carol]);
    noProblems(events);
    expect(texts(events.get(alice))).toEqual(["bob@a.test: hi, bob here", "carol@b.test: carol says hi"]);
    expect(texts(events.get(bob))).toEqual(["alice@a.test: hello from alice", "carol@b.test: carol says hi"]);
    expect(texts(events.get(carol))).toEqual(["alice@a.test: hello from alice", "bob@a.test: hi, bob here"]);
    const bobHistory = await bob.history(groupId);
    expect(bobHistory.map((h) => `${h.from}${h.own ? " (own)" : ""}`)).toEqual([
      "alice@a.test",
      "bob@a.test (own)",
      "carol@b.test",
    ]);
    expect(bobHistory.at(-1)!.seq).toBe(carolSent.seq);

    alice = await reopen(alice);
    bob = await reopen(bob);
    carol = await reopen(carol);
    // Nothing is processed twice after reopening.
    expect((await settle([alice, bob, carol])).get(alice)).toEqual([]);

    // carol is removed; her state as persisted just before she learns of it is kept aside.
    const carolStateBefore = await (await openGroupStateReader(carol.dir, {}))(groupId);
    expect(await alice.removeMembers(groupId, ["carol@b.test"])).toEqual({ removed: ["carol@b.test"] });
    const secret = await alice.send(groupId, "after carol left");
    // The bytes as the hub stored them, read before everyone acknowledges them (the hub may then drop them).
    const [removal, secretEntry] = await a.delivery.context.store.readLog(
      groupId,
      secret.seq - 1,
      secret.seq,
    );
    events = await settle([bob, carol, alice]);
    expect(texts(events.get(bob))).toEqual(["alice@a.test: after carol left"]);
    expect(events.get(bob)).toContainEqual({ type: "member_removed", groupId, accts: ["carol@b.test"] });
    expect(events.get(carol)!.map((e) => e.type)).toEqual(["removed_from_group"]);
    expect(() => carol.epoch(groupId)).toThrow(/no longer in group/);
    expect(carol.groups()).toEqual([
      { groupId, hub: a.urls.delivery, status: "left", epoch: undefined, condition: "ok", forks: [] },
    ]);
    expect(texts((await carol.history(groupId)).map(historyAsEvent))).not.toContain(
      "alice@a.test: after carol left",
    );

    // Even her persisted state cannot read the message sent after the removal.
    const cs = await cipherSuite();
    const old = carolStateBefore;
    const afterRemoval = await processMessage(
      asGroupMessage(decodeMessage(logBytes(removal!.message))),
      old,
      emptyPskIndex,
      acceptAll,
      cs,
    );
    expect(afterRemoval.newState.groupActiveState.kind).toBe("removedFromGroup");
    const secretMsg = asGroupMessage(decodeMessage(logBytes(secretEntry!.message)));
    await expect(processMessage(secretMsg, old, emptyPskIndex, acceptAll, cs)).rejects.toThrow();
    await expect(
      processMessage(secretMsg, afterRemoval.newState, emptyPskIndex, acceptAll, cs),
    ).rejects.toThrow();

    // bob self-updates; alice and bob agree on the new epoch.
    const before = bob.epoch(groupId);
    await bob.selfUpdate(groupId);
    noProblems(await settle([alice, bob]));
    expect(alice.epoch(groupId)).toBe(before + 1);
    expect(alice.epochAuthenticator(groupId)).toBe(bob.epochAuthenticator(groupId));

    // Live events over the WebSocket stream carry the same events.
    const abort = new AbortController();
    const live = bob.events({ signal: abort.signal });
    const first = live.next();
    await alice.send(groupId, "pushed");
    const got = await first;
    abort.abort();
    await live.return(undefined);
    expect(got.value).toMatchObject({ type: "message", from: "alice@a.test", groupId });

    // DESIGN §8: a note whose author is not its MLS sender is refused, not shown. bob's own state and
    // keys (from his directory) make one claiming to be alice's.
    const bobDevice = JSON.parse(await readFile(join(bob.dir, "device.json"), "utf8")) as {
      certificate: string;
      deviceKey: { signKey: string };
    };
    const bobState = await (await openGroupStateReader(bob.dir, {}))(groupId);
    const forged = await createApplicationMessage(
      bobState,
      encodeCleartext(buildCreateNote("acct:alice@a.test", "I am alice")),
      cs,
    );
    const asBob = new DeliveryClient(a.urls.delivery, {
      certificate: fromBase64url(bobDevice.certificate),
      signKey: fromBase64url(bobDevice.deviceKey.signKey),
    });
    await asBob.submit(
      groupId,
      encodeMlsMessage({
        version: "mls10",
        wireformat: "mls_private_message",
        privateMessage: forged.privateMessage,
      }),
    );
    expect(await alice.sync()).toMatchObject([
      { type: "refused", from: "bob@a.test", reason: expect.stringMatching(/actor/) as string },
    ]);
    expect(texts((await alice.history(groupId)).map(historyAsEvent))).not.toContain("bob@a.test: I am alice");
    expect(texts((await alice.history(groupId)).map(historyAsEvent))).not.toContain(
      "alice@a.test: I am alice",
    );
  });
});

describe("races and KeyPackages", () => {
  it("concurrent commits all land; last-resort joins replace it and keep the retired key for later Welcomes", async () => {
    const { a, b, resolver } = env;
    const dave = await newClient(a, "dave", resolver);
    const erin = await newClient(a, "erin", resolver, 1);
    const frank = await newClient(b, "frank", resolver);
    const readErin = async () =>
      JSON.parse(await readFile(join(erin.dir, "device.json"), "utf8")) as {
        lastResort: { ref: string; used: boolean };
      };
    const lastResortBefore = (await readErin()).lastResort.ref;

    const g1 = await dave.createGroup(["erin@a.test", "frank@b.test"]);
    expect(g1.added).toHaveLength(2);
    // erin's only ordinary KeyPackage is gone: every later claim gets her last-resort one, including
    // dave's second group (a new intent, so a new claim_id: the directory does not repeat g1's claim).
    const g2 = await frank.createGroup(["erin@a.test"]);
    expect(g2.added).toHaveLength(1);
    const g3 = await dave.createGroup(["erin@a.test"]);
    expect(g3.added).toHaveLength(1);
    expect(g3.refused).toEqual([]);

    const events = await settle([erin, frank, dave]);
    noProblems(events);
    // Both Welcomes made from the one last-resort KeyPackage open, whichever erin processes first.
    expect(
      events
        .get(erin)!
        .filter((e) => e.type === "joined")
        .map((e) => e.groupId)
        .sort(),
    ).toEqual([g1.groupId, g2.groupId, g3.groupId].sort());
    const after = (await readErin()).lastResort;
    expect(after.used).toBe(false);
    expect(after.ref).not.toBe(lastResortBefore);
    // The retired one stays until it expires; the new one is on disk too.
    expect(await readFile(join(erin.dir, "keypackages", `${lastResortBefore}.json`), "utf8")).toContain(
      "mls-dm.keypackage",
    );
    expect(await readFile(join(erin.dir, "keypackages", `${after.ref}.json`), "utf8")).toContain(
      "mls-dm.keypackage",
    );

    // Three members commit at once: one wins each epoch, the others catch up and retry.
    const start = dave.epoch(g1.groupId);
    await Promise.all([dave, erin, frank].map((c) => c.selfUpdate(g1.groupId)));
    noProblems(await settle([dave, erin, frank]));
    for (const c of [dave, erin, frank]) expect(c.epoch(g1.groupId)).toBe(start + 3);
    expect(new Set([dave, erin, frank].map((c) => c.epochAuthenticator(g1.groupId))).size).toBe(1);
  });
});

describe("leave, through the real hub", () => {
  it("the leaver proposes its removal and forgets the group; a member commits it; the others go on", async () => {
    const { a, b, resolver } = env;
    const gina = await newClient(a, "gina", resolver);
    const hank = await newClient(a, "hank", resolver);
    const ivy = await newClient(b, "ivy", resolver);
    const { groupId } = await gina.createGroup(["hank@a.test", "ivy@b.test"]);
    noProblems(await settle([hank, ivy, gina]));
    await hank.send(groupId, "bye all");
    noProblems(await settle([gina, ivy]));

    expect(await hank.leave(groupId)).toEqual({ proposed: 1 });
    expect(hank.groups()).toMatchObject([{ groupId, status: "left" }]);
    // Left at the hub at once (D17), before anyone commits the Remove: nothing more is kept for him there,
    // and the group no longer counts against his groups.
    const hub = a.delivery.context.store;
    expect(await hub.memberships(groupId, hank.deviceId)).toBeUndefined();
    expect((await hub.deviceGroups(hank.deviceId)).numbers.has(groupId)).toBe(false);
    expect(() => hank.epoch(groupId)).toThrow(/no longer in group/);
    const before = gina.epoch(groupId);
    const events = await settle([ivy, gina, hank]);
    noProblems(events);
    expect(events.get(gina)).toContainEqual({
      type: "member_leaving",
      groupId,
      acct: "hank@a.test",
      deviceId: hank.deviceId,
    });
    // Exactly one commit removed hank: whoever synced first committed it, the other processed it.
    for (const c of [gina, ivy]) {
      expect(
        c
          .members(groupId)
          .map((m) => m.acct)
          .sort(),
      ).toEqual(["gina@a.test", "ivy@b.test"]);
      expect(c.epoch(groupId)).toBe(before + 1);
    }
    expect(gina.epochAuthenticator(groupId)).toBe(ivy.epochAuthenticator(groupId));
    await gina.send(groupId, "after hank left");
    expect(texts((await settle([ivy, hank])).get(ivy))).toEqual(["gina@a.test: after hank left"]);
    expect((await hank.history(groupId)).map((h) => h.from)).toEqual(["hank@a.test"]);
  });
});

function asGroupMessage(m: MLSMessage) {
  if (m.wireformat !== "mls_public_message" && m.wireformat !== "mls_private_message")
    throw new Error(m.wireformat);
  return m;
}

function historyAsEvent(h: Awaited<ReturnType<MlsDmClient["history"]>>[number]): DmEvent {
  if (h.content.kind !== "activity" || h.content.activity.type !== "Create") {
    return {
      type: "unsupported",
      groupId: "",
      from: h.from,
      deviceId: h.deviceId,
      activityType: "",
      seq: h.seq,
    };
  }
  return {
    type: "message",
    groupId: "",
    from: h.from,
    deviceId: h.deviceId,
    note: h.content.activity.object,
    activityId: h.content.activity.id,
    seq: h.seq,
  };
}

/** The hub's log holds each MLSMessage as bytes or (newer stores) as base64url. */
function logBytes(message: Uint8Array | string): Uint8Array {
  return typeof message === "string" ? fromBase64url(message) : message;
}
