import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { generateSigningKeyPair } from "@mastodon-mls/bridge";
import type { InboxItem } from "@mastodon-mls/protocol";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { startTestDirectory, type TestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { manualClock, startHub, type StoreKind, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// Invitations deleted by acknowledgement (docs/decisions.md D16): an account's invitation goes once every
// device the instance's directory lists for the account has acknowledged it, so that a flood no longer
// keeps the queue full for RETENTION_SECONDS while the account's devices read.

const redis = useRedis();
let directory: TestDirectory;
beforeAll(async () => {
  directory = await startTestDirectory();
});
afterAll(async () => {
  await directory.close();
});

const MINUTE = 60_000;
const cursorOf = (p: Record<string, number>) => encodeCursor(new Map(Object.entries(p)));
const accountPosition = (item: InboxItem) => decodeCursor(item.cursor).get("a");

describe.each<StoreKind>(["memory", "redis"])("invitations deleted once read (%s store)", (kind) => {
  const clock = manualClock();
  let hub: TestHub;
  let sender: TestDevice;
  let accounts = 0;
  beforeAll(async () => {
    hub = await startHub(kind, {
      redis: redis(),
      directory,
      now: clock.now,
      env: { MAX_QUEUED_INVITATIONS: "3", RATE_INVITATIONS: "1000", RATE_INVITATIONS_RECEIVED: "1000" },
    });
    sender = await TestDevice.create("sam", "b.test");
  });
  afterAll(async () => {
    await hub.close();
  });

  /** Registered devices of a new account (one account key), named `phone`, `laptop`, … in the test. */
  async function account(n: number): Promise<TestDevice[]> {
    const name = `inv${kind}${++accounts}`;
    const key = await generateSigningKeyPair();
    const devices = await Promise.all(
      Array.from({ length: n }, () => TestDevice.create(name, "a.test", key)),
    );
    await directory.register(...devices);
    return devices;
  }
  const invite = async (device: TestDevice) =>
    (await hub.client(sender).invite(device.acct, "https://hub.b.test", randomGroupId().text)).status;
  /** The sequence numbers of the account's invitations still stored. */
  const waiting = async (device: TestDevice) =>
    (await hub.delivery.context.store.invitations(device.acct, 0, 100)).map((i) => i.seq);
  const deletedByAck = async () => {
    const text = await (await fetch(`${hub.url}/metrics`)).text();
    return Number(/^delivery_invitations_deleted_total\{cause="ack"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  };

  it("deletes an invitation once both listed devices acknowledged it, over HTTP and on the stream", async () => {
    const [phone, laptop] = (await account(2)) as [TestDevice, TestDevice];
    for (let i = 0; i < 3; i++) expect(await invite(phone)).toBe(201);
    const before = await deletedByAck();

    const read = await hub.client(phone).inbox();
    expect(read.items.map((i) => [i.kind, accountPosition(i)])).toEqual([
      ["invitation", 1],
      ["invitation", 2],
      ["invitation", 3],
    ]);
    expect((await hub.client(phone).ack(read.cursor)).status).toBe(200);
    expect(await waiting(phone)).toEqual([1, 2, 3]); // the laptop has not read them

    const stream = await StreamClient.open(hub.url, laptop.signer);
    const pushed = await stream.items(3);
    stream.send({ type: "ack", cursor: pushed[1]!.cursor }); // up to the second only
    await waitFor(async () => (await waiting(phone)).join() === "3");
    stream.send({ type: "ack", cursor: pushed[2]!.cursor });
    await waitFor(async () => (await waiting(phone)).length === 0);
    expect((await deletedByAck()) - before).toBe(3);

    // The lowest position counts: the phone read one more than the laptop.
    for (let i = 0; i < 2; i++) expect(await invite(phone)).toBe(201);
    const more = await stream.items(2);
    const phoneRead = await hub.client(phone).inbox();
    expect((await hub.client(phone).ack(phoneRead.cursor)).status).toBe(200);
    stream.send({ type: "ack", cursor: more[0]!.cursor });
    await waitFor(async () => (await waiting(phone)).join() === "5");
    stream.close();

    // Both at once: whichever reads the other's position second sees both.
    expect(await invite(phone)).toBe(201);
    const [p, l] = await Promise.all([hub.client(phone).inbox(), hub.client(laptop).inbox()]);
    const acks = await Promise.all([hub.client(phone).ack(p.cursor), hub.client(laptop).ack(l.cursor)]);
    expect(acks.map((a) => a.status)).toEqual([200, 200]);
    expect(await waiting(phone)).toEqual([]);

    // An invitation queued while the last acknowledgement of the others is deleted is not: it lies above
    // every position acknowledged.
    expect(await invite(phone)).toBe(201); // 7
    const [p7, l7] = await Promise.all([hub.client(phone).inbox(), hub.client(laptop).inbox()]);
    expect((await hub.client(phone).ack(p7.cursor)).status).toBe(200);
    const [status, acked] = await Promise.all([invite(phone), hub.client(laptop).ack(l7.cursor)]);
    expect([status, acked.status]).toEqual([201, 200]);
    expect(await waiting(phone)).toEqual([8]);
  });

  it("takes new invitations again once the account's devices read a full queue", async () => {
    const [phone, laptop] = (await account(2)) as [TestDevice, TestDevice];
    for (let i = 0; i < 3; i++) expect(await invite(phone)).toBe(201);
    expect(
      await hub.client(sender).invite(phone.acct, "https://hub.b.test", randomGroupId().text),
    ).toMatchObject({ status: 422, body: { error: "too_many_invitations" } });
    await drain(phone, hub.client(phone));
    expect(await invite(phone)).toBe(422); // one device has not read them yet
    await drain(laptop, hub.client(laptop));
    // Until now the queue stayed full for RETENTION_SECONDS, read or not.
    for (let i = 0; i < 3; i++) expect(await invite(phone)).toBe(201);
    expect(await invite(phone)).toBe(422); // the cap still holds for what waits
    expect((await hub.client(laptop).inbox()).items.map(accountPosition)).toEqual([4, 5, 6]);
  });

  it("counts listed devices only: one that never read holds deletion back, one not listed neither counts nor deletes", async () => {
    const [phone, laptop, old] = (await account(3)) as [TestDevice, TestDevice, TestDevice];
    // Same account, a certificate of another account key, never registered at the directory.
    const stranger = await TestDevice.create(phone.name);
    for (let i = 0; i < 2; i++) expect(await invite(phone)).toBe(201);
    await drain(phone, hub.client(phone));
    await drain(laptop, hub.client(laptop));
    expect(await waiting(phone)).toEqual([1, 2]); // `old` is listed and has read nothing (position 0)
    expect(await hub.client(stranger).ack(cursorOf({ a: 2 }))).toMatchObject({
      status: 403,
      body: { error: "device_not_registered" },
    });
    expect(await waiting(phone)).toEqual([1, 2]);

    // `old` is revoked (the next device list leaves it out); the hub learns it once its answer is stale.
    await directory.publishList([phone, laptop]);
    clock.advance(MINUTE);
    expect(await invite(phone)).toBe(201);
    await drain(phone, hub.client(phone));
    expect(await waiting(phone)).toEqual([3]); // read by both listed devices: 1 and 2
    await drain(laptop, hub.client(laptop));
    expect(await waiting(phone)).toEqual([]);
    expect((await hub.client(old).ack(cursorOf({ a: 3 }))).status).toBe(403);
  });

  it("a replayed acknowledgement deletes nothing more, and one beyond the inbox stays invalid_cursor", async () => {
    const [phone, laptop] = (await account(2)) as [TestDevice, TestDevice];
    for (let i = 0; i < 2; i++) expect(await invite(phone)).toBe(201);
    const [p, l] = [await hub.client(phone).inbox(), await hub.client(laptop).inbox()];
    expect((await hub.client(phone).ack(p.cursor)).status).toBe(200);
    expect((await hub.client(laptop).ack(l.items[0]!.cursor)).status).toBe(200);
    expect(await waiting(phone)).toEqual([2]);

    // Old acknowledgements again: nothing the laptop has not read goes.
    expect((await hub.client(laptop).ack(l.items[0]!.cursor)).status).toBe(200);
    expect((await hub.client(phone).ack(p.cursor)).status).toBe(200);
    expect(await waiting(phone)).toEqual([2]);
    // Beyond the last invitation: refused as before, over HTTP and on the stream (4002), nothing deleted.
    expect(await hub.client(laptop).ack(cursorOf({ a: 3 }))).toMatchObject({
      status: 400,
      body: { error: "invalid_cursor" },
    });
    const stream = await StreamClient.open(hub.url, laptop.signer);
    await stream.items(1);
    stream.send({ type: "ack", cursor: cursorOf({ a: 5 }) });
    expect((await stream.closed).code).toBe(4002);
    expect(await waiting(phone)).toEqual([2]);

    expect((await hub.client(laptop).ack(l.cursor)).status).toBe(200);
    expect(await waiting(phone)).toEqual([]);
    // The positions did not move with the deletion: 2 is still the end, 3 still beyond it.
    expect((await hub.client(laptop).ack(cursorOf({ a: 2 }))).status).toBe(200);
    expect((await hub.client(phone).ack(cursorOf({ a: 3 }))).status).toBe(400);
  });

  it("a device reading after the deletion gets the invitations left, with their own positions, and no behind_retention", async () => {
    const [phone, laptop] = (await account(2)) as [TestDevice, TestDevice];
    for (let i = 0; i < 3; i++) expect(await invite(phone)).toBe(201);
    const first = await hub.client(phone).inbox();
    await drain(phone, hub.client(phone));
    await drain(laptop, hub.client(laptop));
    expect(await waiting(phone)).toEqual([]);
    expect(await invite(phone)).toBe(201); // 4

    // A cursor from before the deletion is still good, and reads what is left after it.
    const again = await hub.client(phone).inbox(first.items[0]!.cursor);
    expect(again.items.map((i) => [i.kind, accountPosition(i)])).toEqual([["invitation", 4]]);

    // A device linked now starts with no position: it reads what its account's devices have not all read.
    const tablet = await TestDevice.create(phone.name, "a.test", phone.account);
    await directory.register(tablet);
    const page = await hub.client(tablet).inbox();
    expect(page.items.map((i) => [i.kind, accountPosition(i)])).toEqual([["invitation", 4]]);
    expect(decodeCursor(page.cursor)).toEqual(new Map([["a", 4]]));
    const stream = await StreamClient.open(hub.url, tablet.signer);
    expect((await stream.items(1)).map((i) => [i.kind, accountPosition(i)])).toEqual([["invitation", 4]]);

    // It is listed now, so it counts: 4 goes only once it acknowledged it too.
    await drain(phone, hub.client(phone));
    await drain(laptop, hub.client(laptop));
    expect(await waiting(phone)).toEqual([4]);
    stream.send({ type: "ack", cursor: page.cursor });
    await waitFor(async () => (await waiting(phone)).length === 0);
    stream.close();
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    expect(metrics).not.toMatch(/delivery_behind_retention_total [1-9]/);
  });

  it("a failed deletion fails no acknowledgement and loses nothing: the next one deletes what it left", async () => {
    const [phone, laptop] = (await account(2)) as [TestDevice, TestDevice];
    for (let i = 0; i < 2; i++) expect(await invite(phone)).toBe(201);
    await drain(phone, hub.client(phone));
    const store = hub.delivery.context.store;
    const trim = store.trimInvitations.bind(store);
    store.trimInvitations = () => Promise.reject(new Error("store down"));
    try {
      expect(await drain(laptop, hub.client(laptop))).toHaveLength(2); // drain fails on a non-200 ack
    } finally {
      store.trimInvitations = trim;
    }
    expect(await waiting(phone)).toEqual([1, 2]);
    expect((await hub.client(laptop).inbox()).items).toEqual([]); // the acknowledgement stood
    expect(await invite(phone)).toBe(201);
    await drain(phone, hub.client(phone));
    expect(await waiting(phone)).toEqual([3]);
    await drain(laptop, hub.client(laptop));
    expect(await waiting(phone)).toEqual([]);
  });
});
