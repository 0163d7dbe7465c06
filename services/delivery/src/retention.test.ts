import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { fromBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { startTestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { manualClock, startHub, type StoreKind, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";

// Retention (DESIGN §6): a log entry (with its Welcome) is deleted once every device with a stretch in
// the group acknowledged past it, or RETENTION_SECONDS after it was accepted, whichever comes first. A
// device that had not read it is told (`behind_retention`) and must be re-added.

const redis = useRedis();

const HOUR = 3600 * 1000;
const summary = (items: InboxItem[]) => items.map((i) => [i.kind, "seq" in i ? i.seq : -1]);

describe.each<StoreKind>(["memory", "redis"])("retention (%s store)", (store) => {
  const clock = manualClock();
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub(store, { redis: redis(), now: clock.now, env: { RETENTION_SECONDS: "3600" } });
  });
  afterAll(async () => {
    await hub.close();
  });

  const status = async (device: TestDevice, g: string) =>
    (await hub.client(device).request("GET", `/v1/groups/${g}`)).body as {
      seq: number;
      retained_after: number;
    };

  it("deletes entries once every member device acknowledged them, then those past the retention period", async () => {
    const [alice, bob, carol, dave] = await Promise.all(
      ["alice", "bob", "carol", "dave"].map((n) => TestDevice.create(n)),
    );
    const id = randomGroupId();
    const g = id.text;
    await alice!.startGroup(id.bytes);
    await hub.client(alice!).createGroup(g);
    const add = await alice!.commit([addOf(await bob!.keyPackage()), addOf(await carol!.keyPackage())]);
    expect((await hub.client(alice!).submit(g, add.commit, add.welcome)).status).toBe(201);
    add.apply();
    for (const text of ["one", "two", "three"]) {
      expect((await hub.client(alice!).submit(g, await alice!.encrypt(text))).status).toBe(201);
    }

    // By acknowledgement: nothing goes while one device has not read it; all of it once the last one did.
    await drain(alice!, hub.client(alice!));
    await drain(bob!, hub.client(bob!));
    expect(await status(alice!, g)).toMatchObject({ seq: 4, retained_after: 0 });
    expect((await drain(carol!, hub.client(carol!))).map((i) => i.kind)).toEqual([
      "welcome",
      "message",
      "message",
      "message",
    ]);
    expect(await status(alice!, g)).toMatchObject({ seq: 4, retained_after: 4 });

    // By age: dave is added but never reads, carol goes offline; an hour later their backlog is gone.
    clock.advance(60_000);
    const addDave = await alice!.commit([addOf(await dave!.keyPackage())]);
    expect((await hub.client(alice!).submit(g, addDave.commit, addDave.welcome)).status).toBe(201);
    addDave.apply();
    for (const text of ["four", "five"]) {
      expect((await hub.client(alice!).submit(g, await alice!.encrypt(text))).status).toBe(201);
    }
    await drain(alice!, hub.client(alice!));
    await drain(bob!, hub.client(bob!));
    expect(await status(alice!, g)).toMatchObject({ seq: 7, retained_after: 4 });
    expect(await hub.delivery.sweep()).toEqual({ entries: 0, invitations: 0 });
    clock.advance(HOUR + 1000);
    expect((await hub.delivery.sweep()).entries).toBe(3);
    expect(await status(alice!, g)).toMatchObject({ seq: 7, retained_after: 7 });

    expect((await hub.client(alice!).submit(g, await alice!.encrypt("six"))).status).toBe(201);
    // carol missed 5–7: one behind_retention item at 7, then what is still there.
    const carolSees = (await hub.client(carol!).inbox()).items;
    expect(summary(carolSees)).toEqual([
      ["behind_retention", 7],
      ["message", 8],
    ]);
    expect(carolSees[0]).toMatchObject({ kind: "behind_retention", group_id: g, seq: 7 });
    // dave's Welcome went too: he is told, and must be re-added.
    expect(summary((await hub.client(dave!).inbox()).items)).toEqual([
      ["behind_retention", 7],
      ["message", 8],
    ]);
    // alice and bob, who read everything, notice nothing.
    expect((await drain(bob!, hub.client(bob!))).map((i) => i.text)).toEqual(["six"]);
    await drain(alice!, hub.client(alice!));

    // Re-adding dave: a Remove, then an Add with a fresh KeyPackage. He joins from the new Welcome.
    const removeDave = await alice!.commit([removeOf(3)]);
    expect((await hub.client(alice!).submit(g, removeDave.commit)).status).toBe(201);
    removeDave.apply();
    const readd = await alice!.commit([addOf(await dave!.keyPackage())]);
    expect((await hub.client(alice!).submit(g, readd.commit, readd.welcome)).status).toBe(201);
    readd.apply();
    const daveSees = (await hub.client(dave!).inbox()).items;
    expect(summary(daveSees)).toEqual([
      ["behind_retention", 7],
      ["message", 8],
      ["message", 9],
      ["removed", 9],
      ["welcome", 10],
    ]);
    await dave!.join(fromBase64url((daveSees[4] as { welcome: string }).welcome));
    await hub.client(dave!).ack(daveSees[4]!.cursor);
    expect((await hub.client(alice!).submit(g, await alice!.encrypt("welcome back"))).status).toBe(201);
    expect((await drain(dave!, hub.client(dave!))).map((i) => i.text)).toEqual(["welcome back"]);
  });

  it("deletes invitations past the retention period", async () => {
    // Invitations need the instance's directory (deviceAccess.ts); this hub shares the clock.
    const directory = await startTestDirectory();
    const withDirectory = await startHub(store, {
      redis: redis(),
      now: clock.now,
      env: { RETENTION_SECONDS: "3600" },
      directory,
    });
    const [alice, erin] = await Promise.all([TestDevice.create("alice"), TestDevice.create("erin")]);
    await directory.register(alice, erin);
    const g = randomGroupId().text;
    expect((await withDirectory.client(alice).invite("erin@a.test", "https://hub.b.test", g)).status).toBe(
      201,
    );
    clock.advance(HOUR / 2);
    expect((await withDirectory.client(alice).invite("erin@a.test", "https://hub.b.test", g)).status).toBe(
      201,
    );
    clock.advance(HOUR / 2 + 1000);
    expect((await withDirectory.delivery.sweep()).invitations).toBe(1);
    expect((await withDirectory.client(erin).inbox()).items.map((i) => i.kind)).toEqual(["invitation"]);
    clock.advance(HOUR);
    expect((await withDirectory.delivery.sweep()).invitations).toBe(1);
    expect((await withDirectory.client(erin).inbox()).items).toEqual([]);
    await withDirectory.close();
    await directory.close();
  });
});
