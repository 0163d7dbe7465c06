import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { fromBase64url, toBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { privateMessage } from "./testing/craft.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type StoreKind, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

const redis = useRedis();

const seqs = (items: InboxItem[]) => items.map((i) => ("seq" in i ? i.seq : -1));

/** A device certified for a day, in a group of its own, with its stream open and three messages to send. */
async function streamOfADayOldDevice(hub: TestHub) {
  const dave = await TestDevice.create("dave");
  const id = randomGroupId();
  await dave.startGroup(id.bytes);
  expect((await hub.client(dave).createGroup(id.text)).status).toBe(201);
  const stream = await StreamClient.open(hub.url, dave.signer);
  const messages = [await dave.encrypt("one"), await dave.encrypt("two"), await dave.encrypt("three")];
  return { id, stream, messages };
}

describe.each<StoreKind>(["memory", "redis"])("stream (%s store)", (store) => {
  let hub: TestHub;
  let alice: TestDevice, bob: TestDevice, carol: TestDevice;
  let g: string;

  beforeAll(async () => {
    hub = await startHub(store, { redis: redis() });
    [alice, bob, carol] = (await Promise.all(["alice", "bob", "carol"].map((n) => TestDevice.create(n)))) as [
      TestDevice,
      TestDevice,
      TestDevice,
    ];
    const id = randomGroupId();
    g = id.text;
    await alice.startGroup(id.bytes);
    await hub.client(alice).createGroup(g);
    const add = await alice.commit([addOf(await bob.keyPackage()), addOf(await carol.keyPackage())]);
    expect((await hub.client(alice).submit(g, add.commit, add.welcome)).status).toBe(201);
    add.apply();
    await drain(alice, hub.client(alice));
  });

  afterAll(async () => {
    await hub.close();
  });

  it("refuses every submit frame sent after the device certificate expired, then closes 4001", async () => {
    const { id, stream, messages } = await streamOfADayOldDevice(hub);
    // Two days on, by the wall clock every signature and certificate check reads.
    vi.useFakeTimers({ toFake: ["Date"], shouldAdvanceTime: true });
    try {
      vi.setSystemTime(Date.now() + 2 * 86_400_000);
      const ids = messages.map((m) => stream.submitFrame(id.text, m));
      for (const answer of await Promise.all(ids.map((i) => stream.answer(i)))) {
        expect(answer).toMatchObject({ type: "refused", error: "auth_expired" });
      }
      expect((await stream.closed).code).toBe(4001);
    } finally {
      vi.useRealTimers();
    }
    expect(await hub.delivery.context.store.groupStatus(id.text)).toMatchObject({ seq: 0 });
  });

  it("closes a stream whose device certificate expired at the next re-check, submitting or not", async () => {
    const erin = await TestDevice.create("erin"); // certified for a day
    const stream = await StreamClient.open(hub.url, erin.signer);
    await hub.delivery.recheckStreams();
    // Still open while the certificate holds: a submission is answered on its merits.
    const nowhere = randomGroupId();
    expect(await stream.submit(nowhere.text, privateMessage(nowhere.bytes, 0n, 32))).toMatchObject({
      type: "refused",
      error: "unknown_group",
    });
    vi.useFakeTimers({ toFake: ["Date"], shouldAdvanceTime: true });
    try {
      vi.setSystemTime(Date.now() + 2 * 86_400_000);
      await hub.delivery.recheckStreams();
      expect(await stream.next("error")).toMatchObject({ error: "auth_expired" });
      expect((await stream.closed).code).toBe(4001);
    } finally {
      vi.useRealTimers();
    }
  });

  it("pushes new items, takes acks, and resumes after a cursor", async () => {
    const stream = await StreamClient.open(hub.url, bob.signer);
    const [welcome] = await stream.items(1);
    expect(welcome).toMatchObject({ kind: "welcome", group_id: g, seq: 1 });
    await bob.join(fromBase64url((welcome as { welcome: string }).welcome));

    expect((await hub.client(alice).submit(g, await alice.encrypt("pushed"))).status).toBe(201);
    const [pushed] = await stream.items(1);
    expect(pushed).toMatchObject({ kind: "message", seq: 2 });
    expect(await bob.receive(fromBase64url((pushed as { message: string }).message))).toBe("pushed");
    stream.send({ type: "ack", cursor: pushed!.cursor });

    for (const text of ["while", "away"]) {
      expect((await hub.client(alice).submit(g, await alice.encrypt(text))).status).toBe(201);
    }
    const more = await stream.items(2);
    expect(seqs(more)).toEqual([3, 4]);
    stream.close();
    await stream.closed;

    // Reconnect without a cursor: after what was acknowledged (seq 2).
    const again = await StreamClient.open(hub.url, bob.signer);
    expect(seqs(await again.items(2))).toEqual([3, 4]);
    again.close();
    // Reconnect after the cursor of seq 3.
    const resumed = await StreamClient.open(hub.url, bob.signer, more[0]!.cursor);
    expect(seqs(await resumed.items(1))).toEqual([4]);
    expect(resumed.frames.filter((f) => f.type === "items")).toEqual([]);
    resumed.close();
    await drain(bob, hub.client(bob));
  });

  it("closes with 4001 when authentication fails, 4002 on a bad frame", async () => {
    const wrongChallenge = await StreamClient.connect(hub.url);
    await wrongChallenge.next("challenge");
    await wrongChallenge.auth(bob.signer, toBase64url(new Uint8Array(32)));
    expect(await wrongChallenge.next("error")).toMatchObject({ error: "auth_invalid" });
    expect((await wrongChallenge.closed).code).toBe(4001);

    const notAuth = await StreamClient.connect(hub.url);
    await notAuth.next("challenge");
    notAuth.send({ type: "ack", cursor: "x" });
    expect((await notAuth.closed).code).toBe(4001);

    const garbage = await StreamClient.connect(hub.url);
    await garbage.next("challenge");
    garbage.send("{not json");
    expect((await garbage.closed).code).toBe(4002);

    const badAck = await StreamClient.open(hub.url, carol.signer);
    badAck.send({ type: "ack", cursor: "garbage" });
    expect(await badAck.next("error")).toMatchObject({ error: "invalid_cursor" });
    expect((await badAck.closed).code).toBe(4002);

    const badAfter = await StreamClient.connect(hub.url);
    const challenge = await badAfter.next("challenge");
    await badAfter.auth(carol.signer, challenge.challenge, "garbage");
    expect((await badAfter.closed).code).toBe(4002);

    // A position ahead of the inbox: refused before `ready`, or the stream would push nothing up to it.
    const aheadAfter = await StreamClient.connect(hub.url);
    const aheadChallenge = await aheadAfter.next("challenge");
    // carol's stream: group number 1, the stretch her adding commit (seq 1) began.
    const ahead = toBase64url(new TextEncoder().encode(JSON.stringify({ v: 1, p: { "1.1": 9999 } })));
    await aheadAfter.auth(carol.signer, aheadChallenge.challenge, ahead);
    expect(await aheadAfter.next("error")).toMatchObject({ error: "invalid_cursor" });
    expect((await aheadAfter.closed).code).toBe(4002);
    expect(aheadAfter.frames.filter((f) => f.type === "ready")).toEqual([]);
  });

  it("takes submissions on the stream, screened and answered like the HTTP route", async () => {
    const stream = await StreamClient.open(hub.url, bob.signer);
    const accepted = await stream.submit(g, await bob.encrypt("on the stream"));
    expect(accepted).toMatchObject({ type: "submitted", epoch: 1, seq: expect.any(Number) });
    // Its own message comes back in order, like everyone else's.
    expect((await stream.items(1))[0]).toMatchObject({
      kind: "message",
      seq: (accepted as { seq: number }).seq,
    });
    const spoofed = await stream.submit(g, (await alice.commit()).commit);
    expect(spoofed).toMatchObject({
      type: "refused",
      error: "screening_failed",
      message: expect.stringMatching(/^SCR-6/),
    });
    const otherGroup = await stream.submit(randomGroupId().text, await bob.encrypt("elsewhere"));
    expect(otherGroup).toMatchObject({ type: "refused", message: expect.stringMatching(/^SCR-2/) });
    stream.send({ type: "submit", id: "x", group_id: "!", message: "A" });
    expect((await stream.closed).code).toBe(4002);
    await drain(bob, hub.client(bob));
  });

  it("pushes the removed notice to a removed device's open socket", async () => {
    const stream = await StreamClient.open(hub.url, carol.signer);
    // The Welcome and the four messages of the tests before.
    const backlog = await stream.items(5);
    expect(backlog.map((i) => i.kind)).toEqual(["welcome", "message", "message", "message", "message"]);
    await carol.join(fromBase64url((backlog[0] as { welcome: string }).welcome));
    await drain(alice, hub.client(alice));
    const removal = await alice.commit([removeOf(carol.leaf)]);
    expect((await hub.client(alice).submit(g, removal.commit)).status).toBe(201);
    removal.apply();
    const items = await stream.items(2);
    expect(items.map((i) => i.kind)).toEqual(["message", "removed"]);
    stream.close();
  });

  it("holds pushes on a stream that just sent some, and lets an answer take them along at once", async () => {
    // A hold far longer than this test waits: a held item can only arrive early with an answer.
    const held = await startHub(store, { redis: redis(), limits: { pushCoalesceMs: 120_000 } });
    try {
      const [owner, reader] = await Promise.all([TestDevice.create("ada"), TestDevice.create("ray")]);
      const id = randomGroupId();
      await owner.startGroup(id.bytes);
      await held.client(owner).createGroup(id.text);
      const add = await owner.commit([addOf(await reader.keyPackage())]);
      expect((await held.client(owner).submit(id.text, add.commit, add.welcome)).status).toBe(201);
      add.apply();
      const stream = await StreamClient.open(held.url, reader.signer);
      const [welcome] = await stream.items(1);
      await reader.join(fromBase64url((welcome as { welcome: string }).welcome));
      // Pushed items seen by the hub (counted when queued for the stream, before they are written).
      const queued = async () =>
        (await held.delivery.context.metrics.lag.get()).values.find((v) => v.metricName?.endsWith("_count"))
          ?.value ?? 0;

      // The first push leaves at once; the next one, right after, waits for the hold.
      expect((await held.client(owner).submit(id.text, await owner.encrypt("first"))).status).toBe(201);
      expect(seqs(await stream.items(1))).toEqual([2]);
      expect((await held.client(owner).submit(id.text, await owner.encrypt("second"))).status).toBe(201);
      await waitFor(async () => (await queued()) === 2);
      expect(stream.frames.filter((f) => f.type === "items")).toEqual([]);

      // An answer on the stream goes out at the end of the turn, with the held item behind it. The answer
      // is a refusal, so that nothing else is pushed: the push of an accepted message of the reader's own
      // is announced through Redis on another connection, in this turn or a later one, and a later one
      // would hold it for the whole hold (this test failed so under load).
      const answer = await stream.submit(id.text, new Uint8Array([0, 1, 0, 2]));
      expect(answer).toMatchObject({ type: "refused" });
      const items = await stream.items(1);
      expect(seqs(items)).toEqual([3]);
      expect(await reader.receive(fromBase64url((items[0] as { message: string }).message))).toBe("second");
      const pushed = (await held.delivery.context.metrics.itemsOut.get()).values.find(
        (v) => v.labels.path === "push",
      );
      expect(pushed?.value).toBe(2);
    } finally {
      await held.close();
    }
  });

  it("closes a stream that does not read with 4000 once its send buffer is full", async () => {
    const small = await startHub(store, {
      redis: redis(),
      limits: { streamBufferBytes: 256 * 1024, pageBytes: 512 * 1024 },
    });
    try {
      const [owner, reader] = await Promise.all([TestDevice.create("owen"), TestDevice.create("rita")]);
      const id = randomGroupId();
      await owner.startGroup(id.bytes);
      await small.client(owner).createGroup(id.text);
      const add = await owner.commit([addOf(await reader.keyPackage())]);
      expect((await small.client(owner).submit(id.text, add.commit, add.welcome)).status).toBe(201);
      add.apply();
      // Application messages the hub cannot read but screens as such: real framing, a large ciphertext.
      const stream = await StreamClient.open(small.url, reader.signer);
      const raw = (stream.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      raw.pause();
      // The kernel's socket buffers take several MB first; push until the server gives up on the socket.
      const open = async () => (await small.delivery.context.metrics.sockets.get()).values[0]?.value ?? 0;
      for (let i = 0; i < 40 && (await open()) > 0; i++) {
        const big = privateMessage(id.bytes, owner.epoch, 900 * 1024);
        expect((await small.client(owner).submit(id.text, big)).status).toBe(201);
      }
      expect(await open()).toBe(0);
      raw.resume();
      expect((await stream.closed).code).toBe(4000);
    } finally {
      await small.close();
    }
  });

  it("closes open streams with 4000 on shutdown", async () => {
    const other = await startHub(store, { redis: redis() });
    const stream = await StreamClient.open(other.url, bob.signer);
    await other.close();
    expect((await stream.closed).code).toBe(4000);
  });
});

describe("stream: certificate expiry with a full submit queue (memory store)", () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub("memory", { limits: { streamSubmitQueue: 2 } });
  });
  afterAll(async () => {
    await hub.close();
  });

  // Review of 2026-11-27: the close came after the last submission, before a `rate_limited` refusal
  // chained behind it, which was then never sent.
  it("answers every submit frame (auth_expired, or rate_limited past the queue) before closing 4001", async () => {
    const { id, stream, messages } = await streamOfADayOldDevice(hub);
    vi.useFakeTimers({ toFake: ["Date"], shouldAdvanceTime: true });
    try {
      vi.setSystemTime(Date.now() + 2 * 86_400_000);
      const ids = messages.map((m) => stream.submitFrame(id.text, m));
      const answers = await Promise.all(ids.map((i) => stream.answer(i)));
      expect(answers.map((a) => (a.type === "refused" ? a.error : a.type))).toEqual([
        "auth_expired",
        "auth_expired",
        "rate_limited",
      ]);
      expect((await stream.closed).code).toBe(4001);
    } finally {
      vi.useRealTimers();
    }
  });
});
