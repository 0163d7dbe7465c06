import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { sha256 } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { startTestDirectory, type TestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";
import { ResilientReader, StreamClient } from "./testing/stream.js";

// Several replicas on one Redis behave as one service (DESIGN §6, scale-out): pushes cross replicas
// through Redis pub/sub, the epoch check stays atomic, a removal cuts a device off on every replica,
// and devices on a replica that dies reconnect to another and miss nothing.

const redis = useRedis();

const kinds = (items: InboxItem[]) => items.map((i) => i.kind);
const seqOf = (i: InboxItem) => ("seq" in i ? i.seq : -1);

/** alice creates a group on `hub` and adds the others with one commit; everyone joins from the inbox. */
async function group(hub: TestHub, alice: TestDevice, ...others: TestDevice[]) {
  await hub.directory?.register(alice, ...others);
  const g = randomGroupId();
  await alice.startGroup(g.bytes);
  expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
  const add = await alice.commit(await Promise.all(others.map(async (o) => addOf(await o.keyPackage()))));
  expect((await hub.client(alice).submit(g.text, add.commit, add.welcome)).status).toBe(201);
  add.apply();
  for (const o of others) await drain(o, hub.client(o));
  await drain(alice, hub.client(alice));
  return g.text;
}

describe("two replicas on one Redis", () => {
  // The instance's directory: each replica asks it (and caches its answers) on its own.
  let directory: TestDirectory;
  let one: TestHub, two: TestHub;
  const replica = () => startHub("redis", { redis: redis(), prefix: one.prefix, directory });
  beforeAll(async () => {
    directory = await startTestDirectory();
    one = await startHub("redis", { redis: redis(), directory });
    two = await replica();
  });
  afterAll(async () => {
    await Promise.all([one.close(), two.close()]);
    await directory.close();
  });

  it("pushes what one replica accepts to streams on the other, and cuts a removed device off there", async () => {
    const [alice, bob, carol] = await Promise.all(["alice", "bob", "carol"].map((n) => TestDevice.create(n)));
    const g = await group(one, alice!, bob!, carol!);
    const bobStream = await StreamClient.open(two.url, bob!.signer);
    const carolStream = await StreamClient.open(two.url, carol!.signer);

    expect((await one.client(alice!).submit(g, await alice!.encrypt("across"))).status).toBe(201);
    for (const [device, stream] of [
      [bob!, bobStream],
      [carol!, carolStream],
    ] as const) {
      const [item] = await stream.items(1);
      expect(item).toMatchObject({ kind: "message", group_id: g, seq: 2 });
      expect(await device.receive(fromBase64url((item as { message: string }).message))).toBe("across");
    }

    // carol is removed through replica one; her stream on replica two gets the commit, then `removed`.
    const removal = await alice!.commit([removeOf(carol!.leaf)]);
    expect((await one.client(alice!).submit(g, removal.commit)).status).toBe(201);
    removal.apply();
    expect(kinds(await carolStream.items(2))).toEqual(["message", "removed"]);
    await bob!.receive(fromBase64url(((await bobStream.items(1))[0] as { message: string }).message));

    // Nothing of the group reaches her after that: the next thing she gets is an invitation queued later.
    expect((await one.client(alice!).submit(g, await alice!.encrypt("without carol"))).status).toBe(201);
    const [after] = await bobStream.items(1);
    expect(await bob!.receive(fromBase64url((after as { message: string }).message))).toBe("without carol");
    expect((await one.client(alice!).invite("carol@a.test", "https://hub.b.test", g)).status).toBe(201);
    expect(kinds(await carolStream.items(1))).toEqual(["invitation"]);
    const refused = await carolStream.submit(g, await carol!.encrypt("still here?"));
    expect(refused).toMatchObject({ type: "refused", error: "not_a_member" });
    bobStream.close();
    carolStream.close();
  });

  it("records a fork reported on one replica and tells every member, on both", async () => {
    const [alice, bob, carol, dave] = await Promise.all(
      ["alice", "bob", "carol", "dave"].map((n) => TestDevice.create(n)),
    );
    const g = await group(one, alice!, bob!, carol!);
    const aliceStream = await StreamClient.open(one.url, alice!.signer);
    const bobStream = await StreamClient.open(two.url, bob!.signer);
    const update = await alice!.commit();
    expect((await one.client(alice!).submit(g, update.commit)).status).toBe(201);
    update.apply();
    await bobStream.items(1); // bob "cannot process" it
    await aliceStream.items(1);

    const report = { epoch: 1, commit_hash: toBase64url(sha256(update.commit)), reason: "processing_failed" };
    const path = `/v1/groups/${g}/commit-rejected`;
    const first = await two.client(bob!).request("POST", path, { json: report });
    const fork = {
      seq: 3,
      epoch: 1,
      commit_hash: report.commit_hash,
      commit_seq: 2,
      sender: alice!.deviceId,
      reporter: bob!.deviceId,
      reason: "processing_failed",
    };
    expect(first).toEqual({ status: 201, body: { forked: true, fork } });
    // A repeat, by anyone, gets the first record; a commit that never won, or a non-member, is refused.
    expect(await one.client(carol!).request("POST", path, { json: { ...report, reason: "x" } })).toEqual({
      status: 200,
      body: { forked: true, fork },
    });
    const wrongHash = { ...report, commit_hash: toBase64url(sha256(new Uint8Array(1))) };
    expect((await one.client(carol!).request("POST", path, { json: wrongHash })).body).toMatchObject({
      error: "unknown_commit",
    });
    expect((await one.client(dave!).request("POST", path, { json: report })).status).toBe(403);

    // Every member hears of it: streams on both replicas, and the inbox of one that polls.
    const expected = { kind: "forked", group_id: g, ...fork };
    expect((await aliceStream.items(1))[0]).toMatchObject(expected);
    expect((await bobStream.items(1))[0]).toMatchObject(expected);
    expect((await drain(carol!, two.client(carol!))).at(-1)).toMatchObject(expected);
    const status = await two.client(carol!).request("GET", `/v1/groups/${g}`);
    expect(status).toEqual({
      status: 200,
      // Everyone acknowledged seq 1 (the add) when joining: it is deleted already.
      body: { group_id: g, epoch: 2, seq: 3, retained_after: 1, members: 3, forks: [fork] },
    });
    expect((await two.client(dave!).request("GET", `/v1/groups/${g}`)).status).toBe(403);

    // The hub refuses nothing because of it (D5): the group goes on.
    const next = await alice!.commit();
    expect((await one.client(alice!).submit(g, next.commit)).status).toBe(201);
    aliceStream.close();
    bobStream.close();
  });

  it("keeps devices of a replica that dies: they reconnect to the other and miss nothing", async () => {
    const extra = await replica();
    const [alice, bob, carol] = await Promise.all(["alice", "bob", "carol"].map((n) => TestDevice.create(n)));
    const g = await group(one, alice!, bob!, carol!);
    let alive = [extra.url, two.url];
    const readers = [bob!, carol!].map((d) => new ResilientReader(() => alive, d.signer));
    await Promise.all(readers.map((r) => r.start()));
    const sender = await StreamClient.open(two.url, alice!.signer);
    const texts: string[] = [];
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const text = `m${texts.length}`;
        texts.push(text);
        expect(await sender.submit(g, await alice!.encrypt(text))).toMatchObject({ type: "submitted" });
      }
    };
    await send(10);
    await Promise.all(readers.map((r) => r.until((items) => items.length >= 10)));
    // Abruptly, mid-stream: messages keep coming while the readers reconnect.
    const sending = send(10);
    alive = [two.url];
    await extra.kill();
    await sending;
    await send(5);
    for (const [reader, device] of [
      [readers[0]!, bob!],
      [readers[1]!, carol!],
    ] as const) {
      const items = await reader.until((all) => all.length >= texts.length);
      expect(items.map(seqOf)).toEqual(texts.map((_, i) => i + 2));
      const read: string[] = [];
      for (const item of items)
        read.push((await device.receive(fromBase64url((item as { message: string }).message)))!);
      expect(read).toEqual(texts);
      expect(reader.closes.length).toBeGreaterThanOrEqual(1);
    }
    await Promise.all(readers.map((r) => r.stop()));
    // A graceful stop closes with 4000 (resume): the reader moves on again and misses nothing.
    const third = await replica();
    alive = [third.url, two.url];
    const late = new ResilientReader(() => alive, bob!.signer);
    await late.start();
    alive = [two.url];
    await third.close();
    await send(3);
    const items = await late.until((all) => all.some((i) => seqOf(i) === texts.length + 1));
    expect(late.closes).toContain(4000);
    expect(items.map(seqOf)).toEqual(texts.map((_, i) => i + 2));
    await late.stop();
    sender.close();
  });
});

describe.each([
  ["on one replica", false],
  ["across two replicas", true],
])("two devices racing 20 commits for the same epoch %s", (_name, twoReplicas) => {
  let one: TestHub, two: TestHub;
  beforeAll(async () => {
    one = await startHub("redis", { redis: redis() });
    two = twoReplicas ? await startHub("redis", { redis: redis(), prefix: one.prefix }) : one;
  });
  afterAll(async () => {
    await one.close();
    if (two !== one) await two.close();
  });

  it("lets exactly one win each time; the loser catches up and wins its retry; all converge", async () => {
    const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
    const g = await group(one, alice, bob);
    const hubOf = new Map([
      [alice, one],
      [bob, two],
    ]);
    const client = (d: TestDevice) => hubOf.get(d)!.client(d);
    for (let round = 0; round < 20; round++) {
      const epoch = Number(alice.epoch);
      const [a, b] = await Promise.all([alice.commit(), bob.commit()]);
      const [ra, rb] = await Promise.all([
        client(alice).submit(g, a.commit),
        client(bob).submit(g, b.commit),
      ]);
      expect([ra.status, rb.status].sort()).toEqual([201, 409]);
      const [won, winner, loser, lost] = ra.status === 201 ? [a, alice, bob, rb] : [b, bob, alice, ra];
      const hash = toBase64url(sha256(won.commit));
      expect(lost.body).toMatchObject({ error: "wrong_epoch", epoch: epoch + 1, commit_hash: hash });
      // The winner's 201 was "lost": it sends again and recognises its own commit in the 409.
      const again = await client(winner).submit(g, won.commit);
      expect(again.body).toMatchObject({ error: "wrong_epoch", commit_hash: hash });
      won.apply();
      await drain(loser, client(loser));
      expect(loser.epoch).toBe(BigInt(epoch + 1));
      const retry = await loser.commit();
      expect(await client(loser).submit(g, retry.commit)).toMatchObject({
        status: 201,
        body: { epoch: epoch + 2 },
      });
      retry.apply();
      await drain(winner, client(winner));
      expect(alice.epoch).toBe(BigInt(epoch + 2));
      expect(bob.state!.keySchedule.epochAuthenticator).toEqual(alice.state!.keySchedule.epochAuthenticator);
    }
    expect((await client(bob).submit(g, await bob.encrypt("converged"))).status).toBe(201);
    expect((await drain(alice, client(alice))).flatMap((i) => (i.text ? [i.text] : []))).toEqual([
      "converged",
    ]);
  });
});
