import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// A device leaving a group at the hub on its own (POST /v1/groups/:groupId/departure, D17): anyone with
// one of its KeyPackages can add it to groups, and before this only a member's Remove could take it out
// again, so a stranger could fill its groups at a hub (too_many_groups) and keep it there.

const redis = useRedis();

const departure = (hub: TestHub, device: TestDevice, groupId: string, json: unknown = {}) =>
  hub.client(device).request("POST", `/v1/groups/${groupId}/departure`, { json });

/** A group on `hub` made by `owner`, with `others` added in one commit and joined. */
async function groupWith(hub: TestHub, owner: TestDevice, others: TestDevice[]) {
  const id = randomGroupId();
  await owner.startGroup(id.bytes);
  expect((await hub.client(owner).createGroup(id.text)).status).toBe(201);
  if (others.length > 0) {
    const add = await owner.commit(await Promise.all(others.map(async (o) => addOf(await o.keyPackage()))));
    expect((await hub.client(owner).submit(id.text, add.commit, add.welcome)).status).toBe(201);
    add.apply();
    for (const o of others) await drain(o, hub.client(o));
  }
  return id;
}

describe.each(["memory", "redis"] as const)("departure (%s store)", (kind) => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub(kind, {
      ...(kind === "redis" ? { redis: redis() } : {}),
      limits: { groupsPerDevice: 2 },
    });
  });
  afterAll(async () => {
    await hub.close();
  });

  it("frees the place a stranger's group took in the device's budget", async () => {
    const [stranger, ivan, friend] = await Promise.all([
      TestDevice.create("stranger", "evil.test"),
      TestDevice.create("ivan"),
      TestDevice.create("friend"),
    ]);
    // The stranger claims ivan's KeyPackages and adds him to two groups: ivan's whole budget here.
    const junk = [];
    for (let i = 0; i < 2; i++) junk.push(await groupWith(hub, stranger.twin(), [ivan.twin()]));
    const wanted = randomGroupId();
    await friend.startGroup(wanted.bytes);
    expect((await hub.client(friend).createGroup(wanted.text)).status).toBe(201);
    const add = await friend.commit([addOf(await ivan.keyPackage())]);
    const refused = await hub.client(friend).submit(wanted.text, add.commit, add.welcome);
    expect(refused).toMatchObject({ status: 422, body: { error: "too_many_groups" } });
    // ivan leaves one junk group at the hub on his own; his friend's add then goes through.
    const left = await departure(hub, ivan, junk[0]!.text);
    expect(left).toEqual({ status: 200, body: { departed: true, leaf: 1 } });
    const again = await friend.commit([addOf(await ivan.keyPackage())]);
    expect((await hub.client(friend).submit(wanted.text, again.commit, again.welcome)).status).toBe(201);
    const items = await drain(ivan, hub.client(ivan));
    expect(items.filter((i) => i.kind === "welcome").map((i) => i.group_id)).toEqual([wanted.text]);
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    expect(metrics).toMatch(/delivery_departures_total 1/);
  });

  it("stops delivery and submissions at once; the leaf waits for a member's Remove, and the device may come back", async () => {
    const [alice, bob, carol] = await Promise.all([
      TestDevice.create("alice"),
      TestDevice.create("bob"),
      TestDevice.create("carol"),
    ]);
    const id = await groupWith(hub, alice, [bob, carol]); // alice 0, bob 1, carol 2
    // bob is in a second group with alice, whose messages show that his stream still carries the rest.
    const [alice2, bob2] = [alice.twin(), bob.twin()];
    const other = await groupWith(hub, alice2, [bob2]);
    const stream = await StreamClient.open(hub.url, bob.signer);
    expect(await departure(hub, bob, id.text)).toEqual({ status: 200, body: { departed: true, leaf: 1 } });
    // A repeat (say, after a lost answer) is answered the same, without a leaf.
    expect(await departure(hub, bob, id.text)).toEqual({ status: 200, body: { departed: true, leaf: null } });

    // alice writes to the group bob left, then to the other: his stream carries only the second.
    expect((await hub.client(alice).submit(id.text, await alice.encrypt("after"))).status).toBe(201);
    const otherMessage = await hub.client(alice).submit(other.text, await alice2.encrypt("still here"));
    expect(otherMessage.status).toBe(201);
    const [pushed] = await stream.items(1);
    expect(pushed).toMatchObject({ kind: "message", group_id: other.text });
    stream.close();
    const inbox = await hub.client(bob).inbox();
    expect(inbox.items.some((i) => i.group_id === id.text)).toBe(false);
    expect((await drain(bob2, hub.client(bob))).map((i) => i.text)).toEqual(["still here"]);

    // bob can act in the group no more.
    const sent = await hub.client(bob).submit(id.text, await bob.encrypt("hello?"));
    expect(sent).toMatchObject({ status: 403, body: { error: "not_a_member" } });
    const update = await bob.commit();
    expect(await hub.client(bob).submit(id.text, update.commit)).toMatchObject({
      status: 403,
      body: { error: "not_a_member" },
    });
    expect((await hub.client(bob).request("GET", `/v1/groups/${id.text}`)).body).toMatchObject({
      error: "not_a_member",
    });

    // In the tree his leaf is still there: carol's Remove of it is screened as valid, and everyone left
    // processes it to the same epoch.
    await drain(carol, hub.client(carol));
    const remove = await carol.commit([removeOf(1)]);
    expect((await hub.client(carol).submit(id.text, remove.commit)).status).toBe(201);
    remove.apply();
    await drain(alice, hub.client(alice));
    expect(alice.epoch).toBe(carol.epoch);
    expect((await hub.client(alice).request("GET", `/v1/groups/${id.text}`)).body).toMatchObject({
      members: 2,
    });

    // Added again, with a new KeyPackage: he gets the Welcome and can write.
    const back = await carol.commit([addOf(await bob.keyPackage())]);
    expect((await hub.client(carol).submit(id.text, back.commit, back.welcome)).status).toBe(201);
    back.apply();
    const items = await drain(bob, hub.client(bob));
    expect(items.filter((i) => i.group_id === id.text).map((i) => i.kind)).toEqual(["welcome"]);
    expect((await hub.client(bob).submit(id.text, await bob.encrypt("back"))).status).toBe(201);
    await drain(alice, hub.client(alice));
    expect(alice.epoch).toBe(bob.epoch);
  });

  it("refuses a commit whose sender departed between screening and the store step", async () => {
    // A departure does not move the epoch, so the commit's compare-and-set alone would take a commit
    // screened before its sender left; the store step checks that the sender still sits at its leaf.
    const [alice, bob, carol] = await Promise.all([
      TestDevice.create("alice"),
      TestDevice.create("bob"),
      TestDevice.create("carol"),
    ]);
    const id = await groupWith(hub, alice, [bob]);
    const store = hub.delivery.context.store;
    const original = store.commit.bind(store);
    // The departure request lands while bob's commit is being screened (same device, two requests).
    store.commit = async (groupId, w) => {
      if (groupId === id.text && w.sender === bob.deviceId) await store.depart(groupId, bob.deviceId);
      return original(groupId, w);
    };
    try {
      const add = await bob.commit([addOf(await carol.keyPackage())]);
      const answer = await hub.client(bob).submit(id.text, add.commit, add.welcome);
      expect(answer).toMatchObject({ status: 403, body: { error: "not_a_member" } });
    } finally {
      store.commit = original;
    }
  });

  it("answers malformed departure requests with 4xx, never 500", async () => {
    const alice = await TestDevice.create("alice");
    const id = await groupWith(hub, alice, []);
    const path = `/v1/groups/${id.text}/departure`;
    const client = hub.client(alice);
    const answers = [
      await client.request("POST", path),
      await client.request("POST", path, { json: null }),
      await client.request("POST", path, { json: "x" }),
      await client.request("POST", path, {
        raw: new TextEncoder().encode(""),
        contentType: "application/json",
      }),
      await client.request("POST", path, {
        raw: new TextEncoder().encode("{"),
        contentType: "application/json",
      }),
      await client.request("POST", path, { raw: new TextEncoder().encode("{}"), contentType: "text/plain" }),
      await client.request("POST", `/v1/groups/${"A".repeat(90)}/departure`, { json: {} }),
      await client.request("POST", `/v1/groups/%00/departure`, { json: {} }),
      await client.request("POST", `/v1/groups/${id.text}%2F/departure`, { json: {} }),
    ];
    for (const a of answers) expect(a.status, JSON.stringify(a.body)).toBeLessThan(500);
    // alice is still in her group after all that.
    expect((await client.submit(id.text, await alice.encrypt("still here"))).status).toBe(201);
  });

  it("answers bad requests with clear errors", async () => {
    const [alice, mallory] = await Promise.all([TestDevice.create("alice"), TestDevice.create("mallory")]);
    const id = await groupWith(hub, alice, []);
    // Not in the group: nothing to leave, and nothing of the group changes.
    expect(await departure(hub, mallory, id.text)).toEqual({
      status: 200,
      body: { departed: true, leaf: null },
    });
    expect((await hub.client(alice).submit(id.text, await alice.encrypt("mine"))).status).toBe(201);
    expect(await departure(hub, alice, randomGroupId().text)).toMatchObject({
      status: 404,
      body: { error: "unknown_group" },
    });
    expect(await departure(hub, alice, "not*base64")).toMatchObject({
      status: 400,
      body: { error: "invalid_encoding" },
    });
    expect(await departure(hub, alice, id.text, { leaf: 3 })).toMatchObject({ status: 400 });
    expect(await departure(hub, alice, id.text, [])).toMatchObject({ status: 400 });
    const raw = await hub.client(alice).request("POST", `/v1/groups/${id.text}/departure`, {
      raw: new Uint8Array([1, 2]),
      contentType: "message/mls",
    });
    expect(raw.status).toBe(415);
    // Unsigned, and replayed: refused before anything happens; alice is still a member.
    const client = hub.client(alice);
    const path = `/v1/groups/${id.text}/departure`;
    expect(await client.request("POST", path, { json: {}, authorization: null })).toMatchObject({
      status: 401,
      body: { error: "unauthorized" },
    });
    expect((await hub.client(alice).submit(id.text, await alice.encrypt("still mine"))).status).toBe(201);
    const own = hub.client(mallory);
    expect((await own.request("POST", path, { json: {} })).status).toBe(200);
    expect(await own.request("POST", path, { json: {}, authorization: own.lastAuthorization })).toMatchObject(
      {
        status: 401,
        body: { error: "auth_replayed" },
      },
    );
  });
});
