import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { StoreUnavailableError, connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { LIMITS, toBase64url } from "@mastodon-mls/protocol";
import { channelsOf } from "../channels.js";
import { ackCursor, readInbox } from "../inbox.js";
import { groupTopic } from "../notifier.js";
import { EVENT_MESSAGE_CHARS } from "./events.js";
import { MemoryDeliveryStore } from "./memory.js";
import { RedisDeliveryStore } from "./redis.js";
import {
  FORK_RECORDS,
  PENDING_ADD_MS,
  type CommitWrite,
  type DeliveryStore,
  type MemberRecord,
} from "./types.js";

// One contract, both stores: the Redis one against a real redis-server.

const bytes = (...b: number[]) => Uint8Array.from(b);
const member = (n: string): MemberRecord => ({ device: `dev-${n}`, acct: `${n}@a.test` });
let counter = 0;
const newGroupId = () => `group${++counter}`;

function commitWrite(expectedEpoch: number, over: Partial<CommitWrite> = {}): CommitWrite {
  return {
    expectedEpoch,
    sender: "dev-alice",
    senderLeaf: 0,
    message: bytes(1, 2, expectedEpoch),
    hash: `hash-${expectedEpoch}`,
    at: 1000,
    removes: [],
    adds: [],
    welcome: undefined,
    ...over,
  };
}

const redisHandle = useRedis();
let redis: Redis;

beforeAll(() => {
  redis = connectRedis(redisHandle().url, silentLogger());
});

afterAll(async () => {
  await redis.quit();
});

/** How many winners a group's Redis hash holds (the memory store has no such hash to look at). */
type WinsSize = (groupId: string) => Promise<number | undefined>;

/** The stores' clock (for adds in flight), moved by the tests. */
let now = 1_000_000;
const clock = () => now;

let redisPrefix = "";
const stores: [string, () => DeliveryStore, WinsSize][] = [
  ["memory", () => new MemoryDeliveryStore({ clock }), async () => undefined],
  [
    "redis",
    () => {
      redisPrefix = `${redisHandle().keyPrefix}${++counter}:`;
      return new RedisDeliveryStore(redis, redisPrefix, { clock });
    },
    (groupId) => redis.hlen(`${redisPrefix}{g:${groupId}}:wins`),
  ],
];

describe.each(stores)("DeliveryStore contract (%s)", (_name, make, winsSize) => {
  let store: DeliveryStore;
  beforeAll(() => {
    store = make();
  });

  /** A group with alice at leaf 0 and, with `at` = 1000 + seq, n application messages by her. */
  async function groupWithLog(n: number, others: string[] = []) {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1000 });
    if (others.length > 0) {
      const adds = others.map((o, i) => ({ leaf: i + 1, member: member(o) }));
      await store.commit(id, commitWrite(0, { adds, welcome: bytes(9), at: 1001 }));
    }
    const start = (await store.loadGroup(id))!.seq;
    for (let i = 1; i <= n; i++) {
      await store.append(id, {
        kind: "application",
        epoch: others.length > 0 ? 1 : 0,
        sender: "dev-alice",
        leaf: undefined,
        message: bytes(i),
        at: 1000 + start + i,
        window: 2,
      });
    }
    return id;
  }

  it("creates a group once, with its creator at leaf 0", async () => {
    const id = newGroupId();
    expect(await store.createGroup({ groupId: id, creator: member("alice"), at: 1 })).toBe(true);
    expect(await store.createGroup({ groupId: id, creator: member("bob"), at: 2 })).toBe(false);
    const snap = await store.loadGroup(id);
    expect(snap).toMatchObject({ groupId: id, epoch: 0, seq: 0 });
    expect([...snap!.roster]).toEqual([[0, member("alice")]]);
    expect(await store.memberships(id, "dev-alice")).toEqual({
      seq: 0,
      base: 0,
      memberships: [{ from: 0, until: null }],
    });
    expect(await store.loadGroup(newGroupId())).toBeUndefined();
  });

  it("accepts the first commit for an epoch and reports the winner to the others", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const welcome = bytes(9, 9);
    const first = await store.commit(
      id,
      commitWrite(0, {
        adds: [
          { leaf: 1, member: member("bob") },
          { leaf: 2, member: member("carol") },
        ],
        welcome,
      }),
    );
    expect(first).toMatchObject({ ok: true, seq: 1, epoch: 1 });
    expect(first.ok && first.event).toMatchObject({
      kind: "group",
      groupId: id,
      seq: 1,
      epoch: 0,
      sender: "dev-alice",
      message: toBase64url(bytes(1, 2, 0)),
      changed: ["dev-bob", "dev-carol"],
    });
    expect(await store.commit(id, commitWrite(0, { hash: "other" }))).toEqual({
      ok: false,
      reason: "wrong_epoch",
      epoch: 1,
      winner: "hash-0",
    });
    expect(await store.commit(id, commitWrite(5))).toEqual({
      ok: false,
      reason: "wrong_epoch",
      epoch: 1,
      winner: null,
    });
    expect(await store.winningCommit(id, 0)).toEqual({ hash: "hash-0", seq: 1, sender: "dev-alice" });
    expect(await store.winningCommit(id, 1)).toBeNull();
    expect(await store.welcome(id, 1)).toEqual(welcome);
    expect(await store.memberships(id, "dev-bob")).toEqual({
      seq: 1,
      base: 0,
      memberships: [{ from: 1, until: null }],
    });
    const snap = await store.loadGroup(id);
    expect([...snap!.roster.keys()].sort()).toEqual([0, 1, 2]);
    // Remove bob, then add him back: two stretches.
    expect(
      await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] })),
    ).toMatchObject({
      ok: true,
      seq: 2,
      epoch: 2,
      event: { changed: ["dev-bob"] },
    });
    expect(
      await store.commit(id, commitWrite(2, { adds: [{ leaf: 1, member: member("bob") }], welcome })),
    ).toMatchObject({ ok: true, seq: 3 });
    expect((await store.memberships(id, "dev-bob"))!.memberships).toEqual([
      { from: 1, until: 2 },
      { from: 3, until: null },
    ]);
    expect(await store.commit(newGroupId(), commitWrite(0))).toEqual({ ok: false, reason: "unknown_group" });
  });

  it("only one of many concurrent commits for an epoch wins", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, i) => store.commit(id, commitWrite(0, { hash: `h${i}` }))),
    );
    const winners = outcomes.filter((o) => o.ok);
    expect(winners).toHaveLength(1);
    const winner = (await store.winningCommit(id, 0))!.hash;
    for (const o of outcomes) if (!o.ok) expect(o).toMatchObject({ reason: "wrong_epoch", epoch: 1, winner });
    expect((await store.loadGroup(id))!.seq).toBe(1);
  });

  it("SCR-19: holds at most proposalsPerEpoch proposals, checked in the step that writes one, also when they come together", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const proposal = (ref: string) =>
      store.append(id, {
        kind: "proposal",
        epoch: 0,
        sender: "dev-alice",
        leaf: 0,
        message: bytes(7),
        at: 5,
        ref,
        window: 2,
      });
    const bound = LIMITS.proposalsPerEpoch;
    for (let i = 0; i < bound - 4; i++) expect(await proposal(`p${i}`)).toMatchObject({ ok: true });
    // Eight at once with room for four: four are taken (the screening before saw room for all).
    const together = await Promise.all(Array.from({ length: 8 }, (_, i) => proposal(`q${i}`)));
    expect(together.filter((r) => r.ok)).toHaveLength(4);
    expect(together.filter((r) => !r.ok)).toEqual(Array(4).fill({ ok: false, reason: "too_many_proposals" }));
    expect(await proposal("p0")).toEqual({ ok: false, reason: "duplicate_proposal" });
    expect((await store.loadGroup(id))!.proposals.size).toBe(bound);
    await store.commit(id, commitWrite(0));
    expect(await proposal("after")).toMatchObject({ ok: false, reason: "wrong_epoch" });
  });

  it("appends proposals and application messages under the epoch and membership rules", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const app = (epoch: number, leaf: number | undefined = 0, sender = "dev-alice") =>
      store.append(id, { kind: "application", epoch, sender, leaf, message: bytes(epoch), at: 5, window: 2 });
    expect(await app(0)).toMatchObject({ ok: true, seq: 1, epoch: 0 });
    expect(await app(0, undefined)).toMatchObject({ ok: true, seq: 2, epoch: 0 });
    expect(await app(0, 1)).toEqual({ ok: false, reason: "not_a_member" });
    expect(await app(0, 0, "dev-mallory")).toEqual({ ok: false, reason: "not_a_member" });
    expect(await app(0, undefined, "dev-mallory")).toEqual({ ok: false, reason: "not_a_member" });
    expect(await app(1)).toEqual({ ok: false, reason: "wrong_epoch", epoch: 0, winner: null });
    const proposal = (ref: string, epoch = 0) =>
      store.append(id, {
        kind: "proposal",
        epoch,
        sender: "dev-alice",
        leaf: 0,
        message: bytes(7),
        at: 5,
        ref,
        window: 2,
      });
    expect(await proposal("ref1")).toMatchObject({ ok: true, seq: 3, epoch: 0 });
    expect(await proposal("ref1")).toEqual({ ok: false, reason: "duplicate_proposal" });
    expect((await store.loadGroup(id))!.proposals.get("ref1")).toEqual({ message: bytes(7), senderLeaf: 0 });
    for (let e = 0; e < 3; e++) await store.commit(id, commitWrite(e));
    // A commit clears the epoch's proposals.
    expect((await store.loadGroup(id))!.proposals.size).toBe(0);
    expect(await proposal("ref2", 2)).toMatchObject({ reason: "wrong_epoch", epoch: 3, winner: "hash-2" });
    expect(await app(1)).toMatchObject({ ok: true, seq: 7, epoch: 3 });
    expect(await app(0)).toEqual({ ok: false, reason: "stale_epoch", epoch: 3 });
    const log = await store.readLog(id, 1, 7);
    expect(log.map((e) => [e.seq, e.epoch, e.sender])).toEqual([
      [1, 0, "dev-alice"],
      [2, 0, "dev-alice"],
      [3, 0, "dev-alice"],
      [4, 0, "dev-alice"],
      [5, 1, "dev-alice"],
      [6, 2, "dev-alice"],
      [7, 1, "dev-alice"],
    ]);
    expect(log[0]!.text).toEqual(toBase64url(bytes(0)));
    expect(log[0]!.message).toEqual(bytes(0));
    expect(await store.readLog(id, 6, 100)).toHaveLength(2);
    expect(await store.readLog(id, 8, 10)).toEqual([]);
  });

  it("records a fork once per epoch, as a notice in the log, for an accepted commit only", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    await store.commit(id, commitWrite(0, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(1) }));
    const report = (over: Partial<Parameters<DeliveryStore["reportFork"]>[1]> = {}) =>
      store.reportFork(id, {
        reporter: "dev-bob",
        epoch: 0,
        commitHash: "hash-0",
        reason: "SCR-9",
        at: 7,
        ...over,
      });
    expect(await report({ commitHash: "other" })).toEqual({ ok: false, reason: "unknown_commit" });
    expect(await report({ epoch: 1 })).toEqual({ ok: false, reason: "unknown_commit" });
    expect(await report({ reporter: "dev-mallory" })).toEqual({ ok: false, reason: "not_a_member" });
    expect(
      await store.reportFork(newGroupId(), { reporter: "x", epoch: 0, commitHash: "h", reason: "r", at: 1 }),
    ).toEqual({ ok: false, reason: "unknown_group" });
    const fork = {
      seq: 2,
      epoch: 0,
      commitHash: "hash-0",
      commitSeq: 1,
      sender: "dev-alice",
      reporter: "dev-bob",
      reason: "SCR-9",
    };
    expect(await report()).toMatchObject({ ok: true, created: true, fork, event: { seq: 2, notice: true } });
    expect(await report({ reporter: "dev-alice", reason: "other" })).toMatchObject({
      ok: true,
      created: false,
      fork,
    });
    const [entry] = await store.readLog(id, 2, 2);
    expect(entry).toMatchObject({ seq: 2, epoch: 1, sender: "dev-bob", text: "", fork });
    expect(await store.groupStatus(id)).toEqual({ epoch: 1, seq: 2, base: 0, members: 2, forks: [fork] });
    // The group goes on.
    expect(await store.commit(id, commitWrite(1))).toMatchObject({ ok: true, seq: 3, epoch: 2 });
  });

  it("forgets the winners of epochs whose commits left the log, keeping the latest three", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1000 });
    const known = async (upTo: number) => {
      const out: number[] = [];
      for (let e = 0; e < upTo; e++) if (await store.winningCommit(id, e)) out.push(e);
      return out;
    };
    for (let e = 0; e < 10; e++) await store.commit(id, commitWrite(e, { at: 1000 + e }));
    // Every commit is still in the log: every winner is known.
    expect(await known(10)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // alice, the only member, read them all: the commits leave the log, and with them the old winners.
    expect(await store.ackGroup(id, "dev-alice", [{ from: 0, position: 10 }])).toMatchObject({
      trimmed: 10,
    });
    expect(await known(10)).toEqual([7, 8, 9]);
    // A 409 for a recent epoch still names its winner; for a forgotten one, none.
    expect(await store.commit(id, commitWrite(9, { hash: "late" }))).toEqual({
      ok: false,
      reason: "wrong_epoch",
      epoch: 10,
      winner: "hash-9",
    });
    expect(await store.commit(id, commitWrite(2, { hash: "late" }))).toMatchObject({ winner: null });
    expect(
      await store.reportFork(id, {
        reporter: "dev-alice",
        epoch: 2,
        commitHash: "hash-2",
        reason: "r",
        at: 1,
      }),
    ).toEqual({ ok: false, reason: "unknown_commit" });
    // Group after group of commits read as they come: the hash stays at three, in the commit step itself.
    for (let e = 10; e < 60; e++) {
      await store.commit(id, commitWrite(e, { at: 1000 + e }));
      await store.ackGroup(id, "dev-alice", [{ from: 0, position: e + 1 }]);
      const size = await winsSize(id);
      if (size !== undefined) expect(size).toBeLessThanOrEqual(4);
    }
    expect(await known(60)).toEqual([57, 58, 59]);
    expect(await winsSize(id)).toSatisfy((n: number | undefined) => n === undefined || n === 3);
    // Unread commits keep their winners (those of 57–59 went in these commit steps) until retention by
    // age takes the commits.
    for (let e = 60; e < 70; e++) await store.commit(id, commitWrite(e, { at: 5000 + e }));
    expect(await known(70)).toEqual([60, 61, 62, 63, 64, 65, 66, 67, 68, 69]);
    await store.sweep(6000, 6000, 1000);
    expect(await known(70)).toEqual([67, 68, 69]);
  });

  it("deletes what every device with a stretch has acknowledged, and forgets finished devices", async () => {
    const id = await groupWithLog(4, ["bob"]); // seq 1: add bob; 2–5: messages
    expect(await store.ackGroup(id, "dev-alice", [{ from: 0, position: 4 }])).toEqual({
      done: false,
      trimmed: 0,
      forgotten: [],
    });
    // bob read up to 3: entries 1–3 go (bob's Welcome, at 1, with them).
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 3 }])).toEqual({
      done: false,
      trimmed: 3,
      forgotten: [],
    });
    expect((await store.memberships(id, "dev-bob"))!.base).toBe(3);
    expect(await store.welcome(id, 1)).toBeUndefined();
    expect((await store.readLog(id, 1, 10)).map((e) => e.seq)).toEqual([4, 5]);
    // Acks never go back.
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 1 }])).toEqual({
      done: false,
      trimmed: 0,
      forgotten: [],
    });
    // bob is removed at 6 and reads to the `removed` notice (7): he is done and forgotten.
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] }));
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 6 }])).toEqual({
      done: false,
      trimmed: 1,
      forgotten: [],
    });
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 7 }])).toEqual({
      done: true,
      trimmed: 0,
      forgotten: [1],
    });
    expect(await store.memberships(id, "dev-bob")).toBeUndefined();
    // Only alice holds the rest back now.
    expect(await store.ackGroup(id, "dev-alice", [{ from: 0, position: 6 }])).toEqual({
      done: false,
      trimmed: 2,
      forgotten: [],
    });
    expect(await store.readLog(id, 1, 10)).toEqual([]);
    expect(await store.groupStatus(id)).toMatchObject({ seq: 6, base: 6 });
    // New entries still get the next seq, and read fine after the trimmed ones.
    await store.commit(id, commitWrite(2, { at: 2000 }));
    expect((await store.readLog(id, 1, 10)).map((e) => e.seq)).toEqual([7]);
  });

  it("lets a device depart: no member any more, its leaf kept and marked until a Remove, its stretches forgotten", async () => {
    const id = await groupWithLog(3, ["bob", "carol"]); // seq 1: add bob (1), carol (2); 2–4: messages
    await store.ackGroup(id, "dev-alice", [{ from: 0, position: 4 }]);
    await store.ackGroup(id, "dev-carol", [{ from: 1, position: 4 }]);
    // bob read nothing, so he holds everything back; his departure lets retention move on.
    expect(await store.depart(id, "dev-bob")).toEqual({ ok: true, leaf: 1, trimmed: 4, forgotten: [1] });
    expect(await store.memberships(id, "dev-bob")).toBeUndefined();
    expect(await store.welcome(id, 1)).toBeUndefined();
    const snap = (await store.loadGroup(id))!;
    expect(snap.roster.get(1)).toEqual({ ...member("bob"), departed: true });
    expect(snap.roster.get(2)).toEqual(member("carol"));
    expect((await store.groupStatus(id))!.members).toBe(3);
    // He can append nothing, report no fork, in any epoch.
    const app = { kind: "application", epoch: 1, sender: "dev-bob", leaf: undefined, window: 2 } as const;
    expect(await store.append(id, { ...app, message: bytes(1), at: 5 })).toEqual({
      ok: false,
      reason: "not_a_member",
    });
    expect(
      await store.append(id, { ...app, kind: "proposal", leaf: 1, ref: "r1", message: bytes(2), at: 5 }),
    ).toEqual({ ok: false, reason: "not_a_member" });
    expect(
      await store.reportFork(id, { reporter: "dev-bob", epoch: 0, commitHash: "hash-0", reason: "x", at: 5 }),
    ).toEqual({ ok: false, reason: "not_a_member" });
    // Nor a commit screened before he left (a departure does not move the epoch); nor one naming a leaf
    // that is not its sender's.
    expect(await store.commit(id, commitWrite(1, { sender: "dev-bob", senderLeaf: 1 }))).toEqual({
      ok: false,
      reason: "not_a_member",
    });
    expect(await store.commit(id, commitWrite(1, { senderLeaf: 2 }))).toEqual({
      ok: false,
      reason: "not_a_member",
    });
    // A repeat changes nothing; so does a device that never was in the group; an unknown group is said.
    const nothing = { ok: true, leaf: undefined, trimmed: 0, forgotten: [] };
    expect(await store.depart(id, "dev-bob")).toEqual(nothing);
    expect(await store.depart(id, "dev-nobody")).toEqual(nothing);
    expect(await store.depart(newGroupId(), "dev-bob")).toEqual({ ok: false, reason: "unknown_group" });
    expect((await store.loadGroup(id))!.roster.get(1)).toEqual({ ...member("bob"), departed: true });
    // A member's Remove blanks the leaf without touching anyone's stretches, and an Add may take it again.
    const removed = await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] }));
    expect(removed).toMatchObject({ ok: true, seq: 5 });
    expect((await store.loadGroup(id))!.roster.has(1)).toBe(false);
    expect(await store.memberships(id, "dev-bob")).toBeUndefined();
    expect((await store.memberships(id, "dev-carol"))!.memberships).toEqual([{ from: 1, until: null }]);
    await store.commit(id, commitWrite(2, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(3) }));
    expect((await store.loadGroup(id))!.roster.get(1)).toEqual(member("bob"));
    expect((await store.memberships(id, "dev-bob"))!.memberships).toEqual([{ from: 6, until: null }]);
    expect(await store.append(id, { ...app, epoch: 3, message: bytes(1), at: 7 })).toMatchObject({
      ok: true,
    });
  });

  it("lets a removed device that has not read its removal depart: the group forgets it at once", async () => {
    const id = await groupWithLog(0, ["bob"]); // seq 1: add bob
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] })); // seq 2
    expect(await store.depart(id, "dev-bob")).toEqual({
      ok: true,
      leaf: undefined,
      trimmed: 0,
      forgotten: [1],
    });
    expect(await store.memberships(id, "dev-bob")).toBeUndefined();
    expect(await store.ackGroup(id, "dev-alice", [{ from: 0, position: 2 }])).toEqual({
      done: false,
      trimmed: 2,
      forgotten: [],
    });
  });

  it("deletes log entries, Welcomes and invitations older than the cutoff", async () => {
    const id = await groupWithLog(5, ["bob"]); // seq 1 at 1001, seq n at 1000 + n
    expect(await store.queueInvitation("erin@a.test", invitation(1), 1002)).toBe(1);
    expect(await store.queueInvitation("erin@a.test", invitation(2), 1005)).toBe(2);
    const out = await store.sweep(1004, 5000, 1000);
    expect(out.entries).toBeGreaterThanOrEqual(3);
    expect(out.invitations).toBe(1);
    expect((await store.readLog(id, 1, 10)).map((e) => e.seq)).toEqual([4, 5, 6]);
    expect(await store.welcome(id, 1)).toBeUndefined();
    expect((await store.memberships(id, "dev-bob"))!.base).toBe(3);
    expect(await store.invitationCount("erin@a.test")).toBe(2);
    expect(await store.invitations("erin@a.test", 0, 10)).toEqual([{ seq: 2, invitation: invitation(2) }]);
    expect(await store.queueInvitation("erin@a.test", invitation(3), 1006)).toBe(3);
    // Nothing older is left: a second sweep deletes nothing; a later cutoff deletes the rest.
    expect(await store.sweep(1004, 5000, 1000)).toEqual({ entries: 0, invitations: 0 });
    expect(await store.sweep(10_000, 20_000, 1000)).toMatchObject({ invitations: 2 });
    expect(await store.readLog(id, 1, 10)).toEqual([]);
    expect(await store.invitations("erin@a.test", 0, 10)).toEqual([]);
    expect(await store.invitationCount("erin@a.test")).toBe(3);
  });

  it("indexes a device's groups once each, in order, and forgets one on request", async () => {
    await store.indexDeviceGroups("dev-x", ["g1", "g2"]);
    await store.indexDeviceGroups("dev-x", ["g2", "g3"]);
    const groups = await store.deviceGroups("dev-x");
    expect([...groups.numbers].sort((a, b) => a[1] - b[1]).map(([g]) => g)).toEqual(["g1", "g2", "g3"]);
    expect(new Set(groups.numbers.values()).size).toBe(3);
    expect(groups.next).toBe(3);
    expect(await store.deviceGroupCount("dev-x")).toBe(3);
    expect(await store.forgetDeviceGroup("dev-x", "g2")).toBe("deleted");
    expect([...(await store.deviceGroups("dev-x")).numbers.keys()].sort()).toEqual(["g1", "g3"]);
    expect(await store.forgetDeviceGroup("dev-x", "g2")).toBe("absent");
    await store.indexDeviceGroups("dev-x", ["g2"]);
    expect((await store.deviceGroups("dev-x")).numbers.get("g2")).toBe(4);
    expect(await store.deviceGroups("dev-none")).toEqual({ numbers: new Map(), next: 0 });
    // One entry alone, as departures read it.
    for (const [g, n] of (await store.deviceGroups("dev-x")).numbers) {
      expect(await store.deviceGroupNumber("dev-x", g)).toBe(n);
    }
    expect(await store.deviceGroupNumber("dev-x", "g9")).toBeUndefined();
    expect(await store.deviceGroupNumber("dev-none", "g1")).toBeUndefined();
  });

  const reader = (device: string) => ({ device, acct: undefined });
  /** The device's inbox items of one group (the contract's store is shared by the tests). */
  const read = async (device: string, groupId: string) =>
    (await readInbox(store, reader(device), undefined, { limit: 100, maxBytes: 1 << 20 })).items.filter(
      (i) => "group_id" in i && i.group_id === groupId,
    );
  const readd = (id: string, epoch: number, welcome = 7) =>
    store.commit(
      id,
      commitWrite(epoch, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(welcome) }),
    );

  /**
   * bob added at seq 1 and removed at 2. He has read to his `removed` notice (3) and acknowledged it on
   * his cursor (stream `<n>.1`), not yet in the group (ackGroup), as ackCursor does it.
   */
  async function bobRemoved() {
    const id = await groupWithLog(0);
    await store.beginAdd("dev-bob", id, "t0", 1000);
    await store.commit(id, commitWrite(0, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(6) }));
    await store.endAdd("dev-bob", id, "t0");
    const number = (await store.deviceGroups("dev-bob")).numbers.get(id)!;
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] }));
    await store.advanceCursor("dev-bob", new Map([[`${number}.1`, 3]]));
    return { id, number };
  }
  const done = async (id: string) =>
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 3 }])).toMatchObject({ done: true });

  it("names a stretch by the commit that began it: one added back after the group forgot the device never inherits an old position", async () => {
    const { id, number } = await bobRemoved();
    // A commit re-adding bob begins while the group still has his stretch; the group then forgets him,
    // and the settle of his entry never runs (a crash, or a Redis error on his slot).
    await store.beginAdd("dev-bob", id, "t1", 1000);
    await done(id);
    // The re-adding commit is seq 3, where the old stretch's `removed` was, which bob acknowledged.
    expect(await readd(id, 2)).toMatchObject({ ok: true, seq: 3 });
    await store.endAdd("dev-bob", id, "t1");
    expect(await store.indexIfMember("dev-bob", id)).toBe(false);
    expect((await store.deviceGroups("dev-bob")).numbers.get(id)).toBe(number);
    expect((await store.memberships(id, "dev-bob"))!.memberships).toEqual([{ from: 3, until: null }]);
    // His new stretch is stream `<n>.3`: his acknowledged `<n>.1` does not apply to it.
    const items = await read("dev-bob", id);
    expect(items.map((i) => [i.kind, "seq" in i ? i.seq : undefined])).toEqual([["welcome", 3]]);
    // A settle now keeps the entry (bob is a member), and the group takes acks of stretch 3 only.
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 9 }])).toMatchObject({ done: false });
    expect(await store.ackGroup(id, "dev-bob", [{ from: 3, position: 3 }])).toMatchObject({ done: false });
    expect(await store.indexIfMember("dev-nobody", id)).toBe(false);
    expect(await store.deviceGroups("dev-nobody")).toEqual({ numbers: new Map(), next: 0 });
  });

  it("keeps the entry of an add in flight: a settle meanwhile does not drop it", async () => {
    const { id, number } = await bobRemoved();
    await done(id);
    await store.beginAdd("dev-bob", id, "t1", 1000);
    // The settle runs before the commit lands: no stretch, but an add in flight.
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(await readd(id, 2)).toMatchObject({ ok: true });
    await store.endAdd("dev-bob", id, "t1");
    expect((await store.deviceGroups("dev-bob")).numbers.get(id)).toBe(number);
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect((await read("dev-bob", id)).map((i) => i.kind)).toEqual(["welcome"]);
  });

  it("drops the entry of a refused add, and of one that never ended once PENDING_ADD_MS passed, each add by its own mark", async () => {
    const id = await groupWithLog(0);
    const count = await store.deviceGroupCount("dev-carol");
    await store.beginAdd("dev-carol", id, "a", 1000);
    expect(await store.commit(id, commitWrite(5))).toMatchObject({ ok: false, reason: "wrong_epoch" });
    await store.endAdd("dev-carol", id, "a");
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("deleted");
    expect(await store.deviceGroupCount("dev-carol")).toBe(count);
    // An endAdd with nothing in flight, or after the entry went, changes nothing.
    await store.endAdd("dev-carol", id, "a");
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("absent");
    // A request that died between beginAdd and endAdd keeps the entry until its mark lapses.
    await store.beginAdd("dev-carol", id, "b", 1000);
    now += PENDING_ADD_MS - 1;
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("kept");
    now += 1;
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("deleted");
    expect(await store.deviceGroupCount("dev-carol")).toBe(count);
    // Its late endAdd ends no other add's mark.
    await store.beginAdd("dev-carol", id, "c", 1000);
    await store.endAdd("dev-carol", id, "b");
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("kept");
    // Two adds in flight: the entry stays until both ended.
    await store.beginAdd("dev-carol", id, "d", 1000);
    await store.endAdd("dev-carol", id, "c");
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("kept");
    await store.endAdd("dev-carol", id, "d");
    expect(await store.forgetDeviceGroup("dev-carol", id)).toBe("deleted");
  });

  it("raises cursors and never lowers them", async () => {
    await store.advanceCursor(
      "dev-c",
      new Map([
        ["a", 3],
        ["1.0", 10],
      ]),
    );
    await store.advanceCursor(
      "dev-c",
      new Map([
        ["a", 2],
        ["1.0", 12],
        ["2.0", 1],
      ]),
    );
    expect(Object.fromEntries(await store.cursor("dev-c"))).toEqual({ a: 3, "1.0": 12, "2.0": 1 });
  });

  it("queues invitations per account", async () => {
    expect(await store.queueInvitation("carol@a.test", invitation(1), 1)).toBe(1);
    expect(await store.queueInvitation("carol@a.test", invitation(2), 2)).toBe(2);
    expect(await store.invitationCount("carol@a.test")).toBe(2);
    expect(await store.invitations("carol@a.test", 0, 10)).toEqual([
      { seq: 1, invitation: invitation(1) },
      { seq: 2, invitation: invitation(2) },
    ]);
    expect(await store.invitations("carol@a.test", 1, 10)).toEqual([{ seq: 2, invitation: invitation(2) }]);
    expect(await store.invitations("dave@a.test", 0, 10)).toEqual([]);
  });

  it("takes a place in a device's index only while it has room, in one step", async () => {
    expect(await store.beginAdd("dev-r", "g1", "r1", 2)).toBe("added");
    expect(await store.beginAdd("dev-r", "g1", "r2", 2)).toBe("present");
    // Two requests for the last place at once: one gets it.
    const last = await Promise.all([
      store.beginAdd("dev-r", "g2", "x", 2),
      store.beginAdd("dev-r", "g3", "y", 2),
    ]);
    expect([...last].sort()).toEqual(["added", "full"]);
    expect(await store.deviceGroupCount("dev-r")).toBe(2);
    // Already there needs no room; a place given back can be taken again, once no create of the group
    // is in flight (each reservation is one until its endAdd).
    expect(await store.beginAdd("dev-r", "g1", "r3", 2)).toBe("present");
    await store.endAdd("dev-r", "g1", "r1");
    await store.endAdd("dev-r", "g1", "r2");
    expect(await store.forgetDeviceGroup("dev-r", "g1")).toBe("kept");
    await store.endAdd("dev-r", "g1", "r3");
    expect(await store.forgetDeviceGroup("dev-r", "g1")).toBe("deleted");
    expect(await store.beginAdd("dev-r", "g4", "r4", 2)).toBe("added");
    expect((await store.deviceGroups("dev-r")).next).toBe(3);
  });

  it("keeps fork records with their winners, FORK_RECORDS at most: a late report is taken and the oldest other record goes", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1000 });
    const report = (epoch: number) =>
      store.reportFork(id, { reporter: "dev-alice", epoch, commitHash: `hash-${epoch}`, reason: "r", at: 1 });
    const forked = async () => (await store.groupStatus(id))!.forks.map((f) => f.epoch).sort((x, y) => x - y);
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
    // Nobody reads anything, so every winner stays. The first 6 commits are not reported at first.
    const epochs = FORK_RECORDS + 6;
    for (let e = 0; e < epochs; e++) {
      await store.commit(id, commitWrite(e, { at: 1000 + e }));
      if (e >= 6) expect(await report(e)).toMatchObject({ ok: true, created: true });
    }
    expect(await forked()).toEqual(range(6, epochs));
    // A device back after many commits reports epoch 0, whose winner is still known: it is recorded, and
    // the record of the oldest other epoch goes.
    expect(await report(0)).toMatchObject({ ok: true, created: true });
    expect(await forked()).toEqual([0, ...range(7, epochs)]);
    expect(await report(3)).toMatchObject({ ok: true, created: true });
    expect(await forked()).toEqual([3, ...range(7, epochs)]);
    // alice read everything: the records go with the winners, the last three stay.
    await store.ackGroup(id, "dev-alice", [{ from: 0, position: 2 * epochs }]);
    expect(await forked()).toEqual(range(epochs - 3, epochs));
    // Retention by age takes them with their winners too.
    for (let e = epochs; e < epochs + 3; e++) {
      await store.commit(id, commitWrite(e, { at: 5000 + e }));
      await report(e);
    }
    await store.sweep(10_000, 10_000, 1000);
    expect(await forked()).toEqual(range(epochs, epochs + 3));
  });

  it("queues no more invitations for an account than it has room for", async () => {
    expect(await store.queueInvitation("fred@a.test", invitation(1), 1, 2)).toBe(1);
    expect(await store.queueInvitation("fred@a.test", invitation(2), 3, 2)).toBe(2);
    expect(await store.queueInvitation("fred@a.test", invitation(3), 3, 2)).toBeUndefined();
    expect(await store.invitationCount("fred@a.test")).toBe(2);
    // Room again once the oldest went by age.
    await store.sweep(2, 10, 1000);
    expect(await store.queueInvitation("fred@a.test", invitation(4), 4, 2)).toBe(3);
    expect(await store.invitations("fred@a.test", 0, 10)).toEqual([
      { seq: 2, invitation: invitation(2) },
      { seq: 3, invitation: invitation(4) },
    ]);
  });

  it("deletes invitations up to a position once read, never past the queue, keeping their numbers", async () => {
    const acct = "ines@a.test";
    expect(await store.trimInvitations(acct, 5)).toBe(0); // no queue yet
    for (let n = 1; n <= 3; n++)
      expect(await store.queueInvitation(acct, invitation(n), 1000 + n, 3)).toBe(n);
    expect(await store.queueInvitation(acct, invitation(4), 1004, 3)).toBeUndefined();
    expect(await store.trimInvitations(acct, 0)).toBe(0);
    expect(await store.trimInvitations(acct, 2)).toBe(2);
    // Replayed or older positions delete nothing more; the numbers and the count stay.
    expect(await store.trimInvitations(acct, 2)).toBe(0);
    expect(await store.trimInvitations(acct, 1)).toBe(0);
    expect(await store.invitationCount(acct)).toBe(3);
    expect(await store.invitations(acct, 0, 10)).toEqual([{ seq: 3, invitation: invitation(3) }]);
    // Only what is left counts against the cap.
    expect(await store.queueInvitation(acct, invitation(4), 1004, 3)).toBe(4);
    expect(await store.queueInvitation(acct, invitation(5), 1005, 3)).toBe(5);
    expect(await store.queueInvitation(acct, invitation(6), 1006, 3)).toBeUndefined();
    // A position past the last queued one deletes what exists and nothing queued after.
    expect(await store.trimInvitations(acct, 99)).toBe(3);
    expect(await store.invitations(acct, 0, 10)).toEqual([]);
    expect(await store.invitationCount(acct)).toBe(5);
    expect(await store.queueInvitation(acct, invitation(6), 1006, 3)).toBe(6);
    expect(await store.invitations(acct, 0, 10)).toEqual([{ seq: 6, invitation: invitation(6) }]);
    // Age and acknowledgement delete from the same front: the sweep takes what is left, numbers stay.
    await store.sweep(2000, 3000, 1000);
    expect(await store.invitations(acct, 0, 10)).toEqual([]);
    expect(await store.invitationCount(acct)).toBe(6);
    expect(await store.trimInvitations(acct, 6)).toBe(0);
  });

  it("is ready", async () => {
    expect(await store.ready()).toBe(true);
  });

  // An acknowledgement writes the device's cursor (its slot), then the group's record
  // (the group's slot). If the second step fails, the device's cursor already says it read its `removed`:
  // it is given nothing more in that stretch, so it never acknowledges it again, and the group keeps its
  // stretch (and the device's index entry, a place in its budget) for ever, holding retention by
  // acknowledgement back at the old position.
  it("lets the group forget a device whose ack of `removed` stopped after its cursor moved (healed by a read)", async () => {
    const id = await groupWithLog(0);
    const dev = "dev-rv-half";
    const rv = { device: dev, acct: undefined };
    await store.beginAdd(dev, id, "t", 1000);
    await store.commit(
      id,
      commitWrite(0, { adds: [{ leaf: 1, member: member("rv-half") }], welcome: bytes(5) }),
    );
    await store.endAdd(dev, id, "t");
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: [dev] })); // seq 2
    const opts = { limit: 100, maxBytes: 1 << 20 };
    const page = await readInbox(store, rv, undefined, opts);
    expect(page.items.map((i) => i.kind)).toEqual(["welcome", "message", "removed"]);
    // A Redis error on the group's slot, after the device's cursor was written.
    const failing = new Proxy(store, {
      get(target, prop) {
        if (prop === "ackGroup") return async () => Promise.reject(new StoreUnavailableError());
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    await expect(ackCursor(failing, rv, page.cursor)).rejects.toThrow();
    // The client goes on as clients do: it reads, and acknowledges whatever it is given.
    for (let i = 0; i < 3; i++) {
      const again = await readInbox(store, rv, undefined, opts);
      if (again.items.length > 0) await ackCursor(store, rv, again.cursor);
    }
    await store.ackGroup(id, "dev-alice", [{ from: 0, position: 2 }]);
    // It read everything, `removed` included: the group should have forgotten it, and retention moved on.
    expect(await store.memberships(id, dev)).toBeUndefined();
    expect((await store.groupStatus(id))!.base).toBe(2);
  });

  // Stretches are named by their `from` and numbers are never reused, so the positions
  // of forgotten stretches are never needed again; yet the device's cursor keeps one per stretch it ever
  // had. A member who removes and re-adds a device grows that device's cursor (read whole on every inbox
  // read) by one position per cycle, without bound.
  it("keeps no position of a forgotten stretch: a device removed and added back many times", async () => {
    const id = await groupWithLog(0);
    const dev = "dev-rv-cycle";
    const rv = { device: dev, acct: undefined };
    const opts = { limit: 100, maxBytes: 1 << 20 };
    let epoch = 0;
    for (let k = 0; k < 20; k++) {
      await store.beginAdd(dev, id, `t${k}`, 1000);
      await store.commit(
        id,
        commitWrite(epoch++, { adds: [{ leaf: 1, member: member("rv-cycle") }], welcome: bytes(k) }),
      );
      await store.endAdd(dev, id, `t${k}`);
      await store.commit(id, commitWrite(epoch++, { removes: [1], removedDevices: [dev] }));
      const page = await readInbox(store, rv, undefined, opts);
      expect(page.items.at(-1)?.kind).toBe("removed");
      expect(await ackCursor(store, rv, page.cursor)).toMatchObject({ forgot: true });
    }
    expect(await store.memberships(id, dev)).toBeUndefined();
    expect(await store.deviceGroupCount(dev)).toBe(0);
    // Twenty forgotten stretches, none of which can ever be read again.
    expect((await store.cursor(dev)).size).toBeLessThanOrEqual(1);
  });

  it("forgets the stretches a device read to their `removed` while it is in the group again", async () => {
    const id = await groupWithLog(0);
    const dev = "dev-back";
    const back = { device: dev, acct: undefined };
    const add = async (epoch: number, token: string) => {
      expect(await store.beginAdd(dev, id, token, 1000)).not.toBe("full");
      await store.commit(
        id,
        commitWrite(epoch, { adds: [{ leaf: 1, member: member("back") }], welcome: bytes(epoch) }),
      );
      await store.endAdd(dev, id, token);
    };
    // Added (1), removed (2), added back (3) before it read any of it: two stretches.
    await add(0, "t1");
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: [dev] }));
    await add(2, "t2");
    const number = (await store.deviceGroups(dev)).numbers.get(id)!;
    const page = await readInbox(store, back, undefined, { limit: 100, maxBytes: 1 << 20 });
    expect(page.items.map((i) => i.kind)).toEqual(["welcome", "message", "removed", "welcome"]);
    expect(await ackCursor(store, back, page.cursor)).toMatchObject({ forgot: true });
    // The first stretch is gone, with its positions; the second stays, and the entry with it.
    expect((await store.memberships(id, dev))!.memberships).toEqual([{ from: 3, until: null }]);
    expect([...(await store.cursor(dev)).keys()]).toEqual([`${number}.3`]);
    expect((await store.deviceGroups(dev)).numbers.get(id)).toBe(number);
    // A stale acknowledgement of the forgotten stretch changes nothing in the group, and says it is gone.
    expect(await store.ackGroup(id, dev, [{ from: 1, position: 3 }])).toEqual({
      done: false,
      trimmed: 0,
      forgotten: [1],
    });
    expect(await ackCursor(store, back, new Map([[`${number}.1`, 3]]))).toMatchObject({ forgot: false });
    expect([...(await store.cursor(dev)).keys()]).toEqual([`${number}.3`]);
    // A stream's acknowledgement names what it delivered, without the cursor check (its fast path): the
    // forgotten stretch's position is written back, then dropped again as the group says it is gone.
    const delivered = {
      reached: new Map([
        [`${number}.1`, 3],
        [`${number}.3`, 3],
      ]),
      streamGroups: new Map([
        [`${number}.1`, id],
        [`${number}.3`, id],
      ]),
    };
    expect(await ackCursor(store, back, page.cursor, delivered)).toMatchObject({ forgot: true });
    expect([...(await store.cursor(dev)).keys()]).toEqual([`${number}.3`]);
    // A device the group does not have: nothing, and what it named is gone.
    expect(await store.ackGroup(id, "dev-stranger", [{ from: 0, position: 1 }])).toEqual({
      done: false,
      trimmed: 0,
      forgotten: [0],
    });
  });
});

function invitation(n: number) {
  return { from: "bob@b.test", from_device: `d${n}`, hub: "https://hub.b.test", group_id: `g${n}` };
}

describe("RedisDeliveryStore announcements", () => {
  it("stores and announces an appended message exactly as JSON.stringify would write them", async () => {
    // The APPEND script puts the entry and the announcement together from one copy of the message.
    const prefix = `${redisHandle().keyPrefix}${++counter}:`;
    const store = new RedisDeliveryStore(redis, prefix, { announce: true });
    const sub = connectRedis(redisHandle().url, silentLogger(), { maxRetriesPerRequest: null });
    const payloads: string[] = [];
    sub.on("message", (_channel: string, payload: string) => payloads.push(payload));
    const id = newGroupId();
    await sub.subscribe(...channelsOf(prefix, [groupTopic(id)]));
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const small = bytes(1, 2, 3);
    const large = new Uint8Array(EVENT_MESSAGE_CHARS); // its base64url is longer than events carry
    const outcomes = [
      await store.append(id, {
        kind: "application",
        epoch: 0,
        sender: "dev-alice",
        leaf: undefined,
        message: small,
        at: 1234,
        window: 2,
      }),
      await store.append(id, {
        kind: "application",
        epoch: 0,
        sender: "dev-alice",
        leaf: 0,
        message: large,
        at: 1235,
        window: 2,
      }),
      await store.append(id, {
        kind: "proposal",
        epoch: 0,
        sender: "dev-alice",
        leaf: 0,
        message: small,
        at: 1236,
        ref: "r1",
        window: 2,
      }),
    ];
    await waitFor(() => payloads.length === 3);
    await sub.quit();
    const events = outcomes.map((o) => (o.ok ? o.event : undefined));
    expect(payloads.map((p) => JSON.parse(p) as unknown)).toEqual(events);
    expect(events[0]).toMatchObject({ seq: 1, sender: "dev-alice", at: 1234, message: toBase64url(small) });
    expect(events[1]).not.toHaveProperty("message");
    const entry = (at: number, message: Uint8Array) =>
      JSON.stringify({ t: at, e: 0, d: "dev-alice", m: toBase64url(message) });
    expect(await redis.lrange(`${prefix}{g:${id}}:log`, 0, -1)).toEqual([
      entry(1234, small),
      entry(1235, large),
      entry(1236, small),
    ]);
    expect(await redis.hget(`${prefix}{g:${id}}:props`, "r1")).toBe(
      JSON.stringify({ l: 0, m: toBase64url(small) }),
    );
  });
});

describe("RedisDeliveryStore index settling across hash slots", () => {
  // The memberships (group slot) and the index (device slot) cannot change in one script: a settle reads
  // the entry and its add version, then the memberships, then changes the entry. An add that lands in
  // between must still find bob indexed afterwards (the memory store does all three in one step: nothing
  // can run in between there).
  const readd = (store: RedisDeliveryStore, id: string, epoch = 2) =>
    store.commit(id, commitWrite(epoch, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(7) }));
  const bob = { device: "dev-bob", acct: undefined };
  const opts = { limit: 100, maxBytes: 1 << 20 };

  /** bob added at 1, removed at 2, done with the group (read and acknowledged his `removed`, 3). */
  async function removedAndDone(store: RedisDeliveryStore) {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    await store.beginAdd("dev-bob", id, "t0", 1000);
    await store.commit(id, commitWrite(0, { adds: [{ leaf: 1, member: member("bob") }], welcome: bytes(6) }));
    await store.endAdd("dev-bob", id, "t0");
    await store.commit(id, commitWrite(1, { removes: [1], removedDevices: ["dev-bob"] }));
    const number = (await store.deviceGroups("dev-bob")).numbers.get(id)!;
    await store.advanceCursor("dev-bob", new Map([[`${number}.1`, 3]]));
    expect(await store.ackGroup(id, "dev-bob", [{ from: 1, position: 3 }])).toMatchObject({ done: true });
    return { id, number };
  }

  /** Runs `step` once, between the settle's reads and its change. */
  function between(store: RedisDeliveryStore, step: () => Promise<void>): () => boolean {
    let ran = false;
    store.beforeSettle = async () => {
      if (ran) return;
      ran = true;
      await step();
    };
    return () => ran;
  }

  it("keeps the entry when an add that began before the settle lands and ends between its reads and its change", async () => {
    const store = new RedisDeliveryStore(redis, `${redisHandle().keyPrefix}${++counter}:`);
    const { id, number } = await removedAndDone(store);
    await store.beginAdd("dev-bob", id, "t1", 1000);
    const ran = between(store, async () => {
      expect(await readd(store, id)).toMatchObject({ ok: true, seq: 3 });
      expect(await store.indexIfMember("dev-bob", id)).toBe(false);
      await store.endAdd("dev-bob", id, "t1");
    });
    // The memberships it read had no stretch of bob, and no add is in flight by its change; but one
    // ended since it read the entry's version.
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(ran()).toBe(true);
    expect((await store.deviceGroups("dev-bob")).numbers.get(id)).toBe(number);
    expect((await readInbox(store, bob, undefined, opts)).items.map((i) => i.kind)).toEqual(["welcome"]);
  });

  it("keeps the entry when an add runs whole between a settle's reads and its change", async () => {
    const store = new RedisDeliveryStore(redis, `${redisHandle().keyPrefix}${++counter}:`);
    const { id, number } = await removedAndDone(store);
    const ran = between(store, async () => {
      await store.beginAdd("dev-bob", id, "t1", 1000);
      expect(await readd(store, id)).toMatchObject({ ok: true, seq: 3 });
      await store.endAdd("dev-bob", id, "t1");
    });
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(ran()).toBe(true);
    expect((await store.deviceGroups("dev-bob")).numbers.get(id)).toBe(number);
    expect((await store.memberships(id, "dev-bob"))!.memberships).toEqual([{ from: 3, until: null }]);
  });

  it("loses no Welcome to a read between a re-add landing and a settle's change, with retention at work", async () => {
    const store = new RedisDeliveryStore(redis, `${redisHandle().keyPrefix}${++counter}:`);
    const { id, number } = await removedAndDone(store);
    await store.beginAdd("dev-bob", id, "t1", 1000);
    const ran = between(store, async () => {
      // The re-add lands (seq 3, its Welcome at 3) and alice writes (seq 4); bob's stream, woken by the
      // commit's event, reads and acknowledges; alice reads too, so retention deletes up to 4.
      expect(await readd(store, id)).toMatchObject({ ok: true, seq: 3 });
      await store.append(id, {
        kind: "application",
        epoch: 3,
        sender: "dev-alice",
        leaf: undefined,
        message: bytes(4),
        at: 1004,
        window: 2,
      });
      const page = await readInbox(store, bob, undefined, opts);
      expect(page.items.map((i) => i.kind)).toEqual(["welcome", "message"]);
      await ackCursor(store, bob, page.cursor);
      await store.ackGroup(id, "dev-alice", [{ from: 0, position: 4 }]);
    });
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(ran()).toBe(true);
    await store.endAdd("dev-bob", id, "t1");
    expect((await store.deviceGroups("dev-bob")).numbers.get(id)).toBe(number);
    // Nothing is left to read, and nothing was skipped: bob read the Welcome and the message.
    expect((await readInbox(store, bob, undefined, opts)).items).toEqual([]);
    expect(await store.groupStatus(id)).toMatchObject({ seq: 4, base: 4 });
  });

  it("does not let a lapsed add's late endAdd end the mark of an add that lands during a settle", async () => {
    let t = 0;
    const store = new RedisDeliveryStore(redis, `${redisHandle().keyPrefix}${++counter}:`, {
      clock: () => t,
    });
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    // Add X begins and hangs; its mark lapses and a read settles its entry away.
    await store.beginAdd("dev-bob", id, "x", 1000);
    t += PENDING_ADD_MS;
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("deleted");
    // Add Y begins; then X finally ends.
    await store.beginAdd("dev-bob", id, "y", 1000);
    await store.endAdd("dev-bob", id, "x");
    const ran = between(store, async () => {
      expect(await readd(store, id, 0)).toMatchObject({ ok: true, seq: 1 });
      await store.endAdd("dev-bob", id, "y");
      expect(await store.indexIfMember("dev-bob", id)).toBe(false); // the entry is there
    });
    expect(await store.forgetDeviceGroup("dev-bob", id)).toBe("kept");
    expect(ran()).toBe(true);
    expect((await store.memberships(id, "dev-bob"))!.memberships).toEqual([{ from: 1, until: null }]);
    expect((await store.deviceGroups("dev-bob")).numbers.has(id)).toBe(true);
  });

  it("times adds in flight by Redis's clock, whatever the replicas' clocks say", async () => {
    const prefix = `${redisHandle().keyPrefix}${++counter}:`;
    // Two replicas: one whose clock is 11 minutes slow, and one that gives none (as the service runs).
    const slow = new RedisDeliveryStore(redis, prefix, { clock: () => Date.now() - PENDING_ADD_MS - 60_000 });
    const store = new RedisDeliveryStore(redis, prefix);
    const [a, b] = [newGroupId(), newGroupId()];
    for (const id of [a, b]) await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    await store.beginAdd("dev-bob", a, "fresh", 1000);
    const [seconds, micros] = await redis.time();
    const mark = await redis.hget(`${prefix}{d:dev-bob}:adds`, `p:${a}`);
    const at = Number(/^fresh@(\d+)$/.exec(mark ?? "")?.[1]);
    expect(Math.abs(at - (Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)))).toBeLessThan(5_000);
    // An add in flight by Redis's clock is kept by a settle that gives no clock...
    expect(await store.forgetDeviceGroup("dev-bob", a)).toBe("kept");
    // ...and one the slow replica marked is, by Redis's clock, past its lapse.
    await slow.beginAdd("dev-bob", b, "late", 1000);
    expect(await store.forgetDeviceGroup("dev-bob", b)).toBe("deleted");
  });
});
