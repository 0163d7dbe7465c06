import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { fromBase64url, toBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { decodeCursor } from "./cursor.js";
import { startTestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type StoreKind, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf } from "./testing/mls.js";

const redis = useRedis();

describe.each<StoreKind>(["memory", "redis"])("inbox (%s store)", (store) => {
  let hub: TestHub;
  let alice: TestDevice, bob: TestDevice, frank: TestDevice;
  let g: string;
  /** The 200 texts alice sent while bob was offline. */
  const texts = Array.from({ length: 200 }, (_, i) => `message ${i}`);

  beforeAll(async () => {
    hub = await startHub(store, { redis: redis() });
    [alice, bob, frank] = (await Promise.all(["alice", "bob", "frank"].map((n) => TestDevice.create(n)))) as [
      TestDevice,
      TestDevice,
      TestDevice,
    ];
    const id = randomGroupId();
    g = id.text;
    await alice.startGroup(id.bytes);
    await hub.client(alice).createGroup(g);
    const add = await alice.commit([addOf(await bob.keyPackage()), addOf(await frank.keyPackage())]);
    expect((await hub.client(alice).submit(g, add.commit, add.welcome)).status).toBe(201);
    add.apply();
    for (const text of texts) {
      expect((await hub.client(alice).submit(g, await alice.encrypt(text))).status).toBe(201);
    }
  });

  afterAll(async () => {
    await hub.close();
  });

  it("pages through an offline device's backlog in order, resumes from any item's cursor, and acks", async () => {
    const client = hub.client(bob);
    // Pages of 37, without acking: the same order every time.
    const seen: InboxItem[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await client.inbox(after, 37);
      expect(page.items.length).toBeLessThanOrEqual(37);
      seen.push(...page.items);
      if (!page.more) break;
      after = page.cursor;
    }
    expect(seen.map((i) => i.kind)).toEqual(["welcome", ...texts.map(() => "message")]);
    expect(seen.map((i) => ("seq" in i ? i.seq : -1))).toEqual([1, ...texts.map((_, i) => i + 2)]);
    // Nothing was acknowledged: reading again starts over.
    const again = await client.inbox(undefined, 5);
    expect(again.items.map((i) => i.cursor)).toEqual(seen.slice(0, 5).map((i) => i.cursor));

    // Resume after the 50th item: the 51st comes next.
    const resumed = await client.inbox(seen[49]!.cursor, 3);
    expect(resumed.items.map((i) => ("seq" in i ? i.seq : -1))).toEqual([51, 52, 53]);

    // Ack the 10th item's cursor: a fresh read starts at the 11th. An older ack does not move it back.
    expect((await client.ack(seen[9]!.cursor)).status).toBe(200);
    expect((await client.ack(seen[3]!.cursor)).status).toBe(200);
    const fromAck = await client.inbox(undefined, 2);
    expect(fromAck.items.map((i) => ("seq" in i ? i.seq : -1))).toEqual([11, 12]);

    // A cursor ahead of the inbox, or for a stream bob does not have, is refused.
    const [stream] = [...decodeCursor(seen[9]!.cursor).keys()];
    const ahead = toBase64url(new TextEncoder().encode(JSON.stringify({ v: 1, p: { [stream!]: 9999 } })));
    expect((await client.ack(ahead)).body).toMatchObject({ error: "invalid_cursor" });
    // … and so is reading after it: what arrives up to that position would be skipped.
    expect(await client.request("GET", `/v1/inbox?after=${ahead}`)).toMatchObject({
      status: 400,
      body: { error: "invalid_cursor" },
    });
    const foreign = await hub.client(await TestDevice.create("mallory")).ack(seen[9]!.cursor);
    expect(foreign.body).toMatchObject({ error: "invalid_cursor" });
  });

  it("lets an offline device catch up on 200 messages, nothing missing or duplicated", async () => {
    const received = await drain(frank, hub.client(frank), 64);
    expect(received.map((i) => ("seq" in i ? i.seq : -1))).toEqual([1, ...texts.map((_, i) => i + 2)]);
    expect(received.flatMap((i) => (i.text !== undefined ? [i.text] : []))).toEqual(texts);
    const after = await hub.client(frank).inbox();
    expect(after.items).toEqual([]);
    expect(after.more).toBe(false);
  });

  it("queues invitations for every device of an account of this instance", async () => {
    // Invitations need the instance's directory: only devices it lists for an account read its invitations.
    const directory = await startTestDirectory();
    const withDirectory = await startHub(store, { redis: redis(), directory });
    const carol = await TestDevice.create("carol");
    const carolPhone = await TestDevice.create("carol");
    await directory.register(alice, carol, carolPhone);
    const invite = await withDirectory.client(alice).invite("@Carol@A.TEST", "https://hub.b.test", g);
    expect(invite).toEqual({ status: 201, body: { queued: true } });
    for (const device of [carol, carolPhone]) {
      const page = await withDirectory.client(device).inbox();
      expect(page.items).toEqual([
        {
          kind: "invitation",
          from: "alice@a.test",
          from_device: alice.deviceId,
          hub: "https://hub.b.test",
          group_id: g,
          cursor: expect.any(String),
        },
      ]);
    }
    // One device's ack is its own.
    await withDirectory.client(carol).ack((await withDirectory.client(carol).inbox()).cursor);
    expect((await withDirectory.client(carol).inbox()).items).toEqual([]);
    expect((await withDirectory.client(carolPhone).inbox()).items).toHaveLength(1);

    expect(
      (await withDirectory.client(alice).invite("carol@b.test", "https://hub.b.test", g)).body,
    ).toMatchObject({
      error: "foreign_account",
    });
    expect(
      (await withDirectory.client(alice).invite("not an acct", "https://hub.b.test", g)).body,
    ).toMatchObject({
      error: "invalid_acct",
    });
    expect((await withDirectory.client(alice).invite("carol@a.test", "ftp://hub.b.test", g)).status).toBe(
      400,
    );
    await withDirectory.close();
    await directory.close();
  });

  it("keeps the inbox of a device in several groups in join order, Welcome first", async () => {
    const [dana, erin] = await Promise.all([TestDevice.create("dana"), TestDevice.create("erin")]);
    const groups: string[] = [];
    for (const owner of [dana, dana.twin()]) {
      const id = randomGroupId();
      await owner.startGroup(id.bytes);
      await hub.client(owner).createGroup(id.text);
      const add = await owner.commit([addOf(await erin.keyPackage())]);
      expect((await hub.client(owner).submit(id.text, add.commit, add.welcome)).status).toBe(201);
      add.apply();
      expect((await hub.client(owner).submit(id.text, await owner.encrypt(`in ${id.text}`))).status).toBe(
        201,
      );
      groups.push(id.text);
    }
    const items = (await hub.client(erin).inbox()).items;
    expect(items.map((i) => [i.kind, "group_id" in i ? i.group_id : ""])).toEqual([
      ["welcome", groups[0]],
      ["message", groups[0]],
      ["welcome", groups[1]],
      ["message", groups[1]],
    ]);
    expect(fromBase64url((items[0] as { welcome: string }).welcome).byteLength).toBeGreaterThan(0);
  });
});
