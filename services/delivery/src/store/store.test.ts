import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { MemoryDeliveryStore } from "./memory.js";
import { RedisDeliveryStore } from "./redis.js";
import type { CommitWrite, DeliveryStore, MemberRecord } from "./types.js";

// One contract, both stores: the Redis one against a real redis-server.

const bytes = (...b: number[]) => Uint8Array.from(b);
const member = (n: string): MemberRecord => ({ device: `dev-${n}`, acct: `${n}@a.test` });
let counter = 0;
const newGroupId = () => `group${++counter}`;

function commitWrite(expectedEpoch: number, over: Partial<CommitWrite> = {}): CommitWrite {
  return {
    expectedEpoch,
    sender: "dev-alice",
    message: bytes(1, 2, expectedEpoch),
    hash: `hash-${expectedEpoch}`,
    at: 1000,
    removes: [],
    adds: [],
    welcome: undefined,
    ...over,
  };
}

let redisHandle: RedisHandle;
let redis: Redis;

beforeAll(async () => {
  redisHandle = await startRedis();
  redis = connectRedis(redisHandle.url, silentLogger());
});

afterAll(async () => {
  await redis.quit();
  await redisHandle.stop();
});

const stores: [string, () => DeliveryStore][] = [
  ["memory", () => new MemoryDeliveryStore()],
  ["redis", () => new RedisDeliveryStore(redis, `${redisHandle.keyPrefix}${++counter}:`)],
];

describe.each(stores)("DeliveryStore contract (%s)", (_name, make) => {
  let store: DeliveryStore;
  beforeAll(() => {
    store = make();
  });

  it("creates a group once, with its creator at leaf 0", async () => {
    const id = newGroupId();
    expect(await store.createGroup({ groupId: id, creator: member("alice"), at: 1 })).toBe(true);
    expect(await store.createGroup({ groupId: id, creator: member("bob"), at: 2 })).toBe(false);
    const snap = await store.loadGroup(id);
    expect(snap).toMatchObject({ groupId: id, epoch: 0, seq: 0 });
    expect([...snap!.roster]).toEqual([[0, member("alice")]]);
    expect(await store.memberships(id, "dev-alice")).toEqual({
      seq: 0,
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
    expect(first).toEqual({ ok: true, seq: 1, epoch: 1 });
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
    expect(await store.winningCommit(id, 0)).toBe("hash-0");
    expect(await store.winningCommit(id, 1)).toBeNull();
    expect(await store.welcome(id, 1)).toEqual(welcome);
    expect(await store.memberships(id, "dev-bob")).toEqual({
      seq: 1,
      memberships: [{ from: 1, until: null }],
    });
    const snap = await store.loadGroup(id);
    expect([...snap!.roster.keys()].sort()).toEqual([0, 1, 2]);
    // Remove bob, then add him back: two stretches.
    expect(await store.commit(id, commitWrite(1, { removes: [1] }))).toEqual({ ok: true, seq: 2, epoch: 2 });
    expect(
      await store.commit(id, commitWrite(2, { adds: [{ leaf: 1, member: member("bob") }], welcome })),
    ).toMatchObject({
      ok: true,
      seq: 3,
    });
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
    const winner = await store.winningCommit(id, 0);
    for (const o of outcomes) if (!o.ok) expect(o).toMatchObject({ reason: "wrong_epoch", epoch: 1, winner });
    expect((await store.loadGroup(id))!.seq).toBe(1);
  });

  it("appends proposals and application messages under the epoch and membership rules", async () => {
    const id = newGroupId();
    await store.createGroup({ groupId: id, creator: member("alice"), at: 1 });
    const app = (epoch: number, leaf = 0, sender = "dev-alice") =>
      store.append(id, { kind: "application", epoch, sender, leaf, message: bytes(epoch), at: 5, window: 2 });
    expect(await app(0)).toEqual({ ok: true, seq: 1, epoch: 0 });
    expect(await app(0, 1)).toEqual({ ok: false, reason: "not_a_member" });
    expect(await app(0, 0, "dev-mallory")).toEqual({ ok: false, reason: "not_a_member" });
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
    expect(await proposal("ref1")).toEqual({ ok: true, seq: 2, epoch: 0 });
    expect(await proposal("ref1")).toEqual({ ok: false, reason: "duplicate_proposal" });
    expect((await store.loadGroup(id))!.proposals.get("ref1")).toEqual({ message: bytes(7), senderLeaf: 0 });
    for (let e = 0; e < 3; e++) await store.commit(id, commitWrite(e));
    // A commit clears the epoch's proposals.
    expect((await store.loadGroup(id))!.proposals.size).toBe(0);
    expect(await proposal("ref2", 2)).toMatchObject({ reason: "wrong_epoch", epoch: 3, winner: "hash-2" });
    expect(await app(1)).toEqual({ ok: true, seq: 6, epoch: 3 });
    expect(await app(0)).toEqual({ ok: false, reason: "stale_epoch", epoch: 3 });
    const log = await store.readLog(id, 1, 6);
    expect(log.map((e) => [e.seq, e.epoch, e.sender])).toEqual([
      [1, 0, "dev-alice"],
      [2, 0, "dev-alice"],
      [3, 0, "dev-alice"],
      [4, 1, "dev-alice"],
      [5, 2, "dev-alice"],
      [6, 1, "dev-alice"],
    ]);
    expect(log[0]!.message).toEqual(bytes(0));
    expect(await store.readLog(id, 5, 100)).toHaveLength(2);
    expect(await store.readLog(id, 7, 10)).toEqual([]);
  });

  it("indexes a device's groups once each, in order", async () => {
    await store.indexDeviceGroups("dev-x", ["g1", "g2"]);
    await store.indexDeviceGroups("dev-x", ["g2", "g3"]);
    const groups = await store.deviceGroups("dev-x");
    expect([...groups].sort((a, b) => a[1] - b[1]).map(([g]) => g)).toEqual(["g1", "g2", "g3"]);
    expect(new Set(groups.values()).size).toBe(3);
    expect((await store.deviceGroups("dev-none")).size).toBe(0);
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
    const inv = (n: number) => ({
      from: "bob@b.test",
      from_device: `d${n}`,
      hub: "https://hub.b.test",
      group_id: `g${n}`,
    });
    expect(await store.queueInvitation("carol@a.test", inv(1))).toBe(1);
    expect(await store.queueInvitation("carol@a.test", inv(2))).toBe(2);
    expect(await store.invitationCount("carol@a.test")).toBe(2);
    expect(await store.invitations("carol@a.test", 0, 10)).toEqual([
      { seq: 1, invitation: inv(1) },
      { seq: 2, invitation: inv(2) },
    ]);
    expect(await store.invitations("carol@a.test", 1, 10)).toEqual([{ seq: 2, invitation: inv(2) }]);
    expect(await store.invitations("dave@a.test", 0, 10)).toEqual([]);
  });

  it("is ready", async () => {
    expect(await store.ready()).toBe(true);
  });
});
