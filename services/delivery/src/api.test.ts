import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { cipherSuite, sha256 } from "@mastodon-mls/bridge";
import { toBase64url } from "@mastodon-mls/protocol";
import { createCommit, encodeMlsMessage } from "ts-mls";
import { craftCommit, craftPublic } from "./testing/craft.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type StoreKind, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";

// The hub over real HTTP, driven by real ts-mls clients, on both stores.

const redis = useRedis();

describe.each<StoreKind>(["memory", "redis"])("delivery API (%s store)", (store) => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub(store, { redis: redis() });
  });
  afterAll(async () => {
    await hub.close();
  });

  /** alice creates a group and adds the others with one commit; everyone joins from the inbox. */
  async function group(alice: TestDevice, ...others: TestDevice[]) {
    const g = randomGroupId();
    await alice.startGroup(g.bytes);
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
    if (others.length > 0) {
      const pending = await alice.commit(
        await Promise.all(others.map(async (o) => addOf(await o.keyPackage()))),
      );
      const answer = await hub.client(alice).submit(g.text, pending.commit, pending.welcome);
      expect(answer.status).toBe(201);
      pending.apply();
      for (const o of others) await drain(o, hub.client(o));
      await drain(alice, hub.client(alice));
    }
    return g.text;
  }

  it("creates a group with the signer at epoch 0; a duplicate id is group_exists", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    const created = await hub.client(alice).createGroup(g.text);
    expect(created).toEqual({ status: 201, body: { group_id: g.text, epoch: 0 } });
    const again = await hub.client(await TestDevice.create("bob")).createGroup(g.text);
    expect(again.status).toBe(409);
    expect(again.body.error).toBe("group_exists");
  });

  it("runs a real three-member group: Welcomes to the added only, messages, a removal", async () => {
    const [alice, bob, carol, dave] = (await Promise.all(
      ["alice", "bob", "carol", "dave"].map((n) => TestDevice.create(n)),
    )) as [TestDevice, TestDevice, TestDevice, TestDevice];
    const g = randomGroupId();
    await alice.startGroup(g.bytes);
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);

    const add = await alice.commit([addOf(await bob.keyPackage()), addOf(await carol.keyPackage())]);
    expect(await hub.client(alice).submit(g.text, add.commit, add.welcome)).toEqual({
      status: 201,
      body: { seq: 1, epoch: 1 },
    });
    add.apply();

    // The Welcome goes to bob and carol only; alice sees her commit; dave, no member, sees nothing.
    const bobFirst = await drain(bob, hub.client(bob));
    expect(bobFirst.map((i) => [i.kind, "seq" in i ? i.seq : -1])).toEqual([["welcome", 1]]);
    expect((await drain(carol, hub.client(carol))).map((i) => i.kind)).toEqual(["welcome"]);
    expect((await drain(alice, hub.client(alice))).map((i) => i.kind)).toEqual(["message"]);
    expect(await drain(dave, hub.client(dave))).toEqual([]);
    expect([alice.leaf, bob.leaf, carol.leaf]).toEqual([0, 1, 2]);

    for (const [who, text] of [
      [bob, "hello from bob"],
      [carol, "hi from carol"],
      [alice, "hey all"],
    ] as const) {
      expect((await hub.client(who).submit(g.text, await who.encrypt(text))).status).toBe(201);
    }
    const readBy = async (d: TestDevice) =>
      (await drain(d, hub.client(d))).flatMap((i) => (i.text ? [i.text] : []));
    expect(await readBy(alice)).toEqual(["hello from bob", "hi from carol"]);
    expect(await readBy(bob)).toEqual(["hi from carol", "hey all"]);
    expect(await readBy(carol)).toEqual(["hello from bob", "hey all"]);

    // carol prepares a message, then alice removes her.
    const late = await carol.encrypt("too late");
    const removal = await alice.commit([removeOf(carol.leaf)]);
    expect(await hub.client(alice).submit(g.text, removal.commit)).toEqual({
      status: 201,
      body: { seq: 5, epoch: 2 },
    });
    removal.apply();
    const carolLast = await drain(carol, hub.client(carol));
    expect(carolLast.map((i) => [i.kind, "seq" in i ? i.seq : -1])).toEqual([
      ["message", 5],
      ["removed", 5],
    ]);
    const refused = await hub.client(carol).submit(g.text, late);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ error: "not_a_member" });

    await drain(bob, hub.client(bob));
    expect((await hub.client(bob).submit(g.text, await bob.encrypt("just us"))).status).toBe(201);
    expect(await readBy(alice)).toEqual(["just us"]);
    expect(await drain(carol, hub.client(carol))).toEqual([]);
  });

  it("lets exactly one of two racing commits win; the loser learns the winner's hash", async () => {
    const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
    const g = await group(alice, bob);
    const [a, b] = await Promise.all([alice.commit(), bob.commit()]);
    const [ra, rb] = await Promise.all([
      hub.client(alice).submit(g, a.commit),
      hub.client(bob).submit(g, b.commit),
    ]);
    expect([ra.status, rb.status].sort()).toEqual([201, 409]);
    const [winner, winnerDevice, loser, loserAnswer] =
      ra.status === 201 ? [a, alice, bob, rb] : [b, bob, alice, ra];
    expect(loserAnswer.body).toMatchObject({
      error: "wrong_epoch",
      epoch: 2,
      commit_hash: toBase64url(sha256(winner.commit)),
    });
    // The winner's 201 was "lost": it resubmits and recognises its own commit in the answer.
    const retry = await hub.client(winnerDevice).submit(g, winner.commit);
    expect(retry.status).toBe(409);
    expect(retry.body.commit_hash).toBe(toBase64url(sha256(winner.commit)));
    winner.apply();
    await drain(loser, hub.client(loser));
    expect(loser.epoch).toBe(2n);
    expect((await hub.client(loser).submit(g, await loser.encrypt("after the race"))).status).toBe(201);
    expect(
      (await drain(winnerDevice, hub.client(winnerDevice))).flatMap((i) => (i.text ? [i.text] : [])),
    ).toEqual(["after the race"]);
  });

  it("accepts a proposal, then a commit that names it by reference", async () => {
    const [alice, bob, carol] = (await Promise.all(
      ["alice", "bob", "carol"].map((n) => TestDevice.create(n)),
    )) as [TestDevice, TestDevice, TestDevice];
    const g = await group(alice, bob, carol);
    await drain(bob, hub.client(bob));
    await drain(carol, hub.client(carol));
    // carol leaves: she proposes her own Remove; alice commits it by reference.
    const leave = await carol.propose(removeOf(carol.leaf));
    expect(await hub.client(carol).submit(g, leave.message)).toEqual({
      status: 201,
      body: { seq: 2, epoch: 1 },
    });
    leave.apply();
    const again = await hub.client(carol).submit(g, leave.message);
    expect(again.body.message).toMatch(/^SCR-10/);
    // A commit naming a proposal the hub never accepted is refused.
    const bogus = craftCommit((await alice.commit([removeOf(2)])).commit, (c) => {
      c.proposals = [{ proposalOrRefType: "reference", reference: new Uint8Array(32).fill(1) }];
    });
    expect((await hub.client(alice).submit(g, bogus)).body.message).toMatch(/^SCR-10/);
    await drain(alice, hub.client(alice));
    const commit = await alice.commit();
    expect(await hub.client(alice).submit(g, commit.commit)).toEqual({
      status: 201,
      body: { seq: 3, epoch: 2 },
    });
    commit.apply();
    const carolSees = await drain(carol, hub.client(carol));
    expect(carolSees.map((i) => i.kind)).toEqual(["message", "message", "removed"]);
    await drain(bob, hub.client(bob));
    expect(bob.epoch).toBe(2n);
    expect((await hub.client(carol).submit(g, await bob.encrypt("x"))).body.error).toBe("not_a_member");
  });

  describe("screening, over HTTP", () => {
    let alice: TestDevice, bob: TestDevice, carol: TestDevice;
    let g: string;
    /** A valid commit by alice removing bob (leaf 1); never submitted as is. */
    let removeBob: Uint8Array;

    beforeAll(async () => {
      [alice, bob, carol] = (await Promise.all(
        ["alice", "bob", "carol"].map((n) => TestDevice.create(n)),
      )) as [TestDevice, TestDevice, TestDevice];
      g = await group(alice, bob, carol);
      removeBob = (await alice.commit([removeOf(1)])).commit;
    });

    async function refusal(device: TestDevice, message: Uint8Array, welcome?: Uint8Array) {
      const answer = await hub.client(device).submit(g, message, welcome);
      expect(typeof answer.body.message).toBe("string");
      return {
        status: answer.status,
        error: answer.body.error as string,
        message: answer.body.message as string,
        body: answer.body,
      };
    }

    it("refuses a spoofed sender leaf (SCR-6)", async () => {
      expect(await refusal(bob, removeBob)).toMatchObject({
        status: 422,
        error: "screening_failed",
        message: expect.stringMatching(/^SCR-6/),
      });
    });

    it("refuses a commit sent as a PrivateMessage (SCR-3)", async () => {
      const hidden = await createCommit(
        { state: alice.state!, cipherSuite: await cipherSuite() },
        { wireAsPublicMessage: false, extraProposals: [removeOf(1)] },
      );
      expect(await refusal(alice, encodeMlsMessage(hidden.commit))).toMatchObject({
        status: 422,
        message: expect.stringMatching(/^SCR-3/),
      });
    });

    it("refuses a commit for another group (SCR-2)", async () => {
      const other = randomGroupId();
      const answer = await hub.client(alice).submit(other.text, removeBob);
      expect(answer).toMatchObject({ status: 404, body: { error: "unknown_group" } });
      // A group alice is in, at the same epoch: the group id inside still differs.
      const second = await group(alice.twin(), carol.twin());
      const cross = await hub.client(alice).submit(second, removeBob);
      expect(cross.status).toBe(422);
      expect(cross.body.message).toMatch(/^SCR-2/);
    });

    it("refuses Removes of a leaf beyond the tree and of a blank leaf (SCR-9), and keeps serving", async () => {
      for (const leaf of [3, 7, 2 ** 31]) {
        const crafted = craftCommit(removeBob, (c) => {
          c.proposals = [{ proposalOrRefType: "proposal", proposal: removeOf(leaf) }];
        });
        expect(await refusal(alice, crafted)).toMatchObject({
          status: 422,
          message: expect.stringMatching(/^SCR-9/),
        });
      }
      const metrics = await fetch(`${hub.url}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/delivery_messages_refused_total\{kind="commit",reason="SCR-9"\} 3/);
    });

    it("refuses a non-member (403) and a replayed request (401)", async () => {
      const dave = await TestDevice.create("dave");
      expect(await refusal(dave, removeBob)).toMatchObject({ status: 403, error: "not_a_member" });
      const client = hub.client(alice);
      const message = { message: toBase64url(await alice.encrypt("once")) };
      const first = await client.request("POST", `/v1/groups/${g}/messages`, { json: message });
      expect(first.status).toBe(201);
      const replay = await client.request("POST", `/v1/groups/${g}/messages`, {
        json: message,
        authorization: client.lastAuthorization,
      });
      expect(replay).toMatchObject({ status: 401, body: { error: "auth_replayed" } });
      const unsigned = await client.request("POST", `/v1/groups/${g}/messages`, {
        json: message,
        authorization: null,
      });
      expect(unsigned).toMatchObject({ status: 401, body: { error: "unauthorized" } });
    });

    it("refuses commits for a future or past epoch (409 wrong_epoch)", async () => {
      const future = craftPublic(removeBob, (pm) => {
        pm.content.epoch += 5n;
      });
      const answer = await refusal(alice, future);
      expect(answer).toMatchObject({
        status: 409,
        error: "wrong_epoch",
        body: { epoch: 1, commit_hash: null },
      });
      const past = craftPublic(removeBob, (pm) => {
        pm.content.epoch = 0n;
      });
      expect((await refusal(alice, past)).body).toMatchObject({
        error: "wrong_epoch",
        epoch: 1,
        commit_hash: expect.any(String),
      });
    });

    it("refuses a commit that adds without its Welcome, or with another Welcome (WEL-2, WEL-4)", async () => {
      const dave = await TestDevice.create("dave");
      const add = await alice.commit([addOf(await dave.keyPackage())]);
      expect((await refusal(alice, add.commit)).message).toMatch(/^WEL-2/);
      const otherAdd = await alice.commit([addOf(await dave.keyPackage())]);
      expect((await refusal(alice, add.commit, otherAdd.welcome)).message).toMatch(/^WEL-4/);
      expect((await refusal(alice, add.commit, add.commit)).message).toMatch(/^WEL-3/);
      expect((await refusal(alice, removeBob, add.welcome)).message).toMatch(/^WEL-1/);
    });
  });

  it("answers garbage, truncated and oversized bodies on every endpoint with a 4xx {error, message}", async () => {
    const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
    const g = await group(alice, bob);
    const client = hub.client(alice);
    const valid = await alice.encrypt("valid");
    const b64 = toBase64url(valid);
    const routes: [string, string][] = [
      ["POST", "/v1/groups"],
      ["POST", `/v1/groups/${g}/messages`],
      ["POST", "/v1/invitations"],
      ["POST", "/v1/inbox/ack"],
    ];
    const bodies: { raw: Uint8Array; contentType?: string }[] = [
      { raw: new TextEncoder().encode("{not json") },
      { raw: new TextEncoder().encode('{"message": "') },
      { raw: new TextEncoder().encode("[]") },
      { raw: new TextEncoder().encode('{"message": 5, "group_id": [], "cursor": {}}') },
      { raw: new Uint8Array(0) },
      { raw: crypto.getRandomValues(new Uint8Array(64)), contentType: "message/mls" },
      { raw: crypto.getRandomValues(new Uint8Array(64)), contentType: "application/octet-stream" },
      { raw: new Uint8Array(4 * 1024 * 1024).fill(0x41) },
    ];
    for (const [method, path] of routes) {
      for (const body of bodies) {
        const answer = await client.request(method, path, body);
        expect(
          answer.status,
          `${method} ${path} ${body.contentType ?? "json"} ${body.raw.byteLength}`,
        ).toBeGreaterThanOrEqual(400);
        expect(answer.status).toBeLessThan(500);
        expect(answer.body).toMatchObject({ error: expect.any(String), message: expect.any(String) });
      }
    }
    const messageBodies: unknown[] = [
      { message: b64.slice(0, -7) },
      { message: `${b64}AAAA` },
      { message: "!!!!" },
      { message: "A" },
      { message: toBase64url(new Uint8Array(64).fill(0xff)) },
      { message: b64, welcome: "garbage" },
      { message: "A".repeat(1_500_000) },
    ];
    for (const json of messageBodies) {
      const answer = await client.request("POST", `/v1/groups/${g}/messages`, { json });
      expect(answer.status).toBeGreaterThanOrEqual(400);
      expect(answer.status).toBeLessThan(500);
      expect(answer.body).toMatchObject({ error: expect.any(String), message: expect.any(String) });
    }
    const rawElsewhere = await client.request("POST", "/v1/groups", {
      raw: valid,
      contentType: "message/mls",
    });
    expect(rawElsewhere.status).toBe(415);
    const truncatedRaw = await client.request("POST", `/v1/groups/${g}/messages`, {
      raw: valid.subarray(0, valid.byteLength - 3),
      contentType: "message/mls",
    });
    expect(truncatedRaw.body.error).toBe("invalid_mls_message");
    for (const after of [
      "garbage",
      "eyJ2IjoyfQ",
      toBase64url(new TextEncoder().encode('{"v":1,"p":{"99.0":1}}')),
    ]) {
      const answer = await client.request("GET", `/v1/inbox?after=${after}`);
      expect(answer).toMatchObject({ status: 400, body: { error: "invalid_cursor" } });
    }
    expect((await client.request("GET", "/v1/inbox?limit=0")).status).toBe(400);
    expect((await client.request("GET", `/v1/inbox?after=${"A".repeat(70_000)}`)).status).toBeLessThan(500);
    // Still serving, and the raw form of a valid message is accepted.
    expect((await fetch(`${hub.url}/healthz`)).status).toBe(200);
    const raw = await client.request("POST", `/v1/groups/${g}/messages`, {
      raw: valid,
      contentType: "message/mls",
    });
    expect(raw.status).toBe(201);
  });

  it("serves the operational routes", async () => {
    expect(await (await fetch(`${hub.url}/readyz`)).json()).toEqual({ status: "ok" });
    // No DIRECTORY_URL here, so nothing to advertise (deviceAccess.test.ts has a hub with a directory).
    expect(await fetch(`${hub.url}/.well-known/mls-services`)).toMatchObject({ status: 404 });
    const spec = (await (await fetch(`${hub.url}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining([
        "/v1/groups",
        "/v1/groups/{groupId}",
        "/v1/groups/{groupId}/messages",
        "/v1/groups/{groupId}/commit-rejected",
        "/v1/inbox",
        "/v1/inbox/ack",
        "/v1/invitations",
        "/v1/stream",
      ]),
    );
    // Every device-signed operation documents its request and its answers, errors and 429 included.
    type Operation = { summary?: string; responses: Record<string, unknown>; requestBody?: unknown };
    for (const [path, item] of Object.entries(spec.paths as Record<string, Record<string, Operation>>)) {
      if (!path.startsWith("/v1/") || path === "/v1/stream") continue;
      for (const [method, op] of Object.entries(item)) {
        expect(op.summary, `${method} ${path}`).toBeTruthy();
        expect(Object.keys(op.responses), `${method} ${path}`).toEqual(
          expect.arrayContaining(["400", "401", "429", "503"]),
        );
        if (method === "post") expect(op.requestBody, `${method} ${path}`).toBeDefined();
      }
    }
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    for (const name of [
      "delivery_messages_accepted_total",
      "delivery_messages_refused_total",
      "delivery_items_delivered_total",
      "delivery_lag_seconds",
      "delivery_stream_sockets",
      "delivery_connected_devices",
      "delivery_rate_limited_total",
      "delivery_retention_deleted_total",
      "delivery_invitations_deleted_total",
    ]) {
      expect(metrics).toContain(name);
    }
    expect(metrics).toMatch(/delivery_messages_refused_total\{kind="commit",reason="wrong_epoch"\} \d+/);
    expect(metrics).toMatch(/delivery_items_delivered_total\{kind="message",path="poll"\} \d+/);
  });
});
