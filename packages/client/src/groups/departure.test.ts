import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { aliceOnFake, NO_WAIT } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";

// A departure at the hub (D17) still to do is follow-up work of its own: a hub that refuses it (503, or
// rate_limited: departures share RATE_SUBMISSIONS with messages) must not fail anything else, such as
// the catch-up read of a send that met a commit it had not read (review of 2026-11-27: it did). Groups
// left before departures existed are departed once.

let fake: FakeServices;
let alice: MlsDmClient;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  alice = await aliceOnFake(fake, "departure");
});
afterEach(() => fake.stop());

it("a pending departure of another group that fails does not make a send fail", async () => {
  const { groupId: kept } = await alice.createGroup();
  const { groupId: left } = await alice.createGroup();
  // The hub cannot take the departure now (a store hiccup): it stays pending, as designed.
  fake.failDepartures = 2;
  expect(await alice.leave(left)).toEqual({ proposed: 0 });
  expect(fake.departures).toEqual([]);
  // The next message meets a commit the device has not read yet (wrong_epoch): it catches up and retries.
  let refusedOnce = false;
  fake.script = (s) => {
    if (s.groupId !== kept || s.isCommit || refusedOnce) return "accept";
    refusedOnce = true;
    return {
      status: 409,
      body: { error: "wrong_epoch", message: "not yet", epoch: s.epoch, commit_hash: null },
    };
  };
  // The catch-up read retries the departure, which fails again (503): the send must not fail for that.
  await expect(alice.send(kept, "hello")).resolves.toMatchObject({ seq: expect.any(Number) });
});

it("departs once from a group left before departures existed", async () => {
  const { groupId: old } = await alice.createGroup();
  await alice.leave(old);
  expect(fake.departures.map((d) => d.groupId)).toEqual([old]);
  // As an earlier release left it: no record of a departure either way.
  const file = join(alice.dir, "groups", old, "group.json");
  const record = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  expect(record.departedAt).toEqual(expect.any(Number));
  delete record.departedAt;
  await writeFile(file, JSON.stringify(record));
  const reopened = await MlsDmClient.open(alice.dir, { retry: NO_WAIT });
  await reopened.sync();
  expect(fake.departures.map((d) => d.groupId)).toEqual([old, old]);
  await reopened.sync();
  expect(fake.departures).toHaveLength(2);
  expect((JSON.parse(await readFile(file, "utf8")) as { departedAt?: number }).departedAt).toEqual(
    expect.any(Number),
  );
});
