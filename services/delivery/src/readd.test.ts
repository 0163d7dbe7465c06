import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "@mastodon-mls/protocol";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// A device that can no longer follow its group (stuck after a fork, behind retention) is given a fresh
// leaf in one commit: a Remove of its leaf and an Add of a new KeyPackage of the same device (MLS applies
// Removes first, RFC 9420 §12.3; SCR-13 lets it through). The hub must end the old membership and begin
// the new one at the same sequence number: `removed` closes the old stretch, the Welcome opens the new one.

const redis = useRedis();

describe.each(["memory", "redis"] as const)(
  "a device removed and added again in one commit (%s store)",
  (kind) => {
    let hub: TestHub;
    beforeAll(async () => {
      hub = await startHub(kind, kind === "redis" ? { redis: redis() } : {});
    });
    afterAll(async () => {
      await hub.close();
    });

    /** alice's group with bob (leaf 1), carol (leaf 2) and dave (leaf 3), everyone joined. */
    async function group() {
      const [alice, bob, carol, dave] = await Promise.all(
        ["alice", "bob", "carol", "dave"].map((n) => TestDevice.create(n)),
      );
      const id = randomGroupId();
      await alice!.startGroup(id.bytes);
      expect((await hub.client(alice!).createGroup(id.text)).status).toBe(201);
      const add = await alice!.commit(
        await Promise.all([bob!, carol!, dave!].map(async (d) => addOf(await d.keyPackage()))),
      );
      expect((await hub.client(alice!).submit(id.text, add.commit, add.welcome)).status).toBe(201);
      add.apply();
      for (const d of [bob!, carol!, dave!]) await drain(d, hub.client(d));
      return { alice: alice!, bob: bob!, carol: carol!, dave: dave!, id };
    }

    it("reads: the old stretch up to `removed`, then the Welcome at the same seq, then the group goes on", async () => {
      const { alice, bob, carol, id } = await group();
      const before = await alice.encrypt("before");
      expect((await hub.client(alice).submit(id.text, before)).status).toBe(201);
      const readd = await alice.commit([removeOf(1), addOf(await bob.keyPackage())]);
      const accepted = await hub.client(alice).submit(id.text, readd.commit, readd.welcome);
      expect(accepted).toMatchObject({ status: 201, body: { seq: 3 } });
      readd.apply();
      // bob is a member (at the leaf MLS gave him: his own, the leftmost blank one).
      expect((await hub.client(bob).request("GET", `/v1/groups/${id.text}`)).status).toBe(200);
      const after = await alice.encrypt("after");
      expect((await hub.client(alice).submit(id.text, after)).status).toBe(201);

      // bob reads as a device that could not follow the group would: the old epoch's message, the commit
      // that removes him (which he cannot process: his old leaf's keys open nothing of its path), his
      // removal, then the Welcome, and after it the new epoch.
      const page = await hub.client(bob).inbox();
      expect(page.items.map((i) => [i.kind, i.kind === "invitation" ? undefined : i.seq])).toEqual([
        ["message", 2],
        ["message", 3],
        ["removed", 3],
        ["welcome", 3],
        ["message", 4],
      ]);
      const [old, , , welcome, next] = page.items;
      if (old?.kind !== "message" || welcome?.kind !== "welcome" || next?.kind !== "message")
        throw new Error("items");
      expect(await bob.receive(fromBase64url(old.message))).toBe("before");
      await bob.join(fromBase64url(welcome.welcome));
      expect(await bob.receive(fromBase64url(next.message))).toBe("after");
      expect((await hub.client(bob).ack(page.cursor)).status).toBe(200);

      // He sends in the new epoch; carol (who processed the commit) reads him.
      await drain(carol, hub.client(carol));
      const hello = await bob.encrypt("fresh leaf");
      expect((await hub.client(bob).submit(id.text, hello)).status).toBe(201);
      expect((await drain(carol, hub.client(carol))).map((i) => i.text)).toEqual(["fresh leaf"]);
      // Acknowledged, the old stretch is done with: only his own new message comes after the cursor.
      const rest = await hub.client(bob).inbox(page.cursor);
      expect(rest.items.map((i) => [i.kind, i.kind === "invitation" ? undefined : i.seq])).toEqual([
        ["message", 5],
      ]);
    });

    it("pushes on an open stream: the `removed` item, then the Welcome; the stream stays open", async () => {
      const { alice, bob, id } = await group();
      const stream = await StreamClient.open(hub.url, bob.signer);
      try {
        const readd = await alice.commit([removeOf(1), addOf(await bob.keyPackage())]);
        expect((await hub.client(alice).submit(id.text, readd.commit, readd.welcome)).status).toBe(201);
        readd.apply();
        const pushed = await stream.items(3);
        expect(pushed.map((i) => i.kind)).toEqual(["message", "removed", "welcome"]);
        const welcome = pushed[2]!;
        if (welcome.kind !== "welcome") throw new Error("not a welcome");
        await bob.join(fromBase64url(welcome.welcome));
        const hello = await alice.encrypt("still here?");
        expect((await hub.client(alice).submit(id.text, hello)).status).toBe(201);
        const [next] = await stream.items(1);
        if (next?.kind !== "message") throw new Error(`expected a message, got ${next?.kind}`);
        expect(await bob.receive(fromBase64url(next.message))).toBe("still here?");
      } finally {
        stream.close();
      }
    });

    it("the Add lands at the leftmost blank leaf, not the removed one; the hub places it there too", async () => {
      const { alice, bob, dave, id } = await group();
      const kick = await alice.commit([removeOf(2)]); // carol: leaf 2 blank
      expect((await hub.client(alice).submit(id.text, kick.commit)).status).toBe(201);
      kick.apply();
      const readd = await alice.commit([removeOf(3), addOf(await dave.keyPackage())]);
      expect((await hub.client(alice).submit(id.text, readd.commit, readd.welcome)).status).toBe(201);
      readd.apply();
      await drain(bob, hub.client(bob));
      const page = await hub.client(dave).inbox();
      const welcome = page.items.find((i) => i.kind === "welcome");
      if (welcome?.kind !== "welcome") throw new Error("no welcome");
      await dave.join(fromBase64url(welcome.welcome));
      expect(dave.leaf).toBe(2);
      // dave commits from leaf 2 (the hub checks the sender sits at the leaf it has for him) and is read.
      const update = await dave.commit([]);
      expect((await hub.client(dave).submit(id.text, update.commit)).status).toBe(201);
      update.apply();
      const hello = await dave.encrypt("from leaf 2");
      expect((await hub.client(dave).submit(id.text, hello)).status).toBe(201);
      expect((await drain(alice, hub.client(alice))).map((i) => i.text).at(-1)).toBe("from leaf 2");
    });

    it("a departed leaf re-added in one commit: the device reads the Welcome and is a member again", async () => {
      const { alice, dave, id } = await group();
      const left = await hub.client(dave).request("POST", `/v1/groups/${id.text}/departure`, { json: {} });
      expect(left).toEqual({ status: 200, body: { departed: true, leaf: 3 } });
      const readd = await alice.commit([removeOf(3), addOf(await dave.keyPackage())]);
      expect((await hub.client(alice).submit(id.text, readd.commit, readd.welcome)).status).toBe(201);
      readd.apply();
      const page = await hub.client(dave).inbox();
      expect(page.items.map((i) => i.kind)).toEqual(["welcome"]);
      const welcome = page.items[0]!;
      if (welcome.kind !== "welcome") throw new Error("no welcome");
      await dave.join(fromBase64url(welcome.welcome));
      expect(dave.leaf).toBe(3);
      const hello = await dave.encrypt("back");
      expect((await hub.client(dave).submit(id.text, hello)).status).toBe(201);
      expect((await drain(alice, hub.client(alice))).map((i) => i.text).at(-1)).toBe("back");
    });
  },
);
