import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { StaticResolver } from "../transport/resolver.js";

// How a group's state is kept on disk (README "Storage"): the ratchet tree and past epochs in a base
// snapshot written only when they change, group.json holding the rest. A message leaves the base alone;
// a commit writes a new one and deletes the old; a reopened device has exactly the state it had.

let fake: FakeServices;
let dir: string;
beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  dir = join(await mkdtemp(join(tmpdir(), "mls-dm-state-")), "d");
});
afterEach(() => fake.stop());

const bases = async (groupId: string) =>
  (await readdir(join(dir, "groups", groupId))).filter((f) => f.startsWith("base-")).sort();
const groupFile = async (groupId: string) =>
  JSON.parse(await readFile(join(dir, "groups", groupId, "group.json"), "utf8")) as {
    stateBase?: string;
    state: string;
  };

describe("group state files", () => {
  it("a message rewrites only group.json; a commit writes a new base and drops the old; reopening restores the state", async () => {
    const alice = await MlsDmClient.create({
      dir,
      acct: "alice@a.test",
      mastodonToken: "t",
      services: { directory: fake.url, delivery: fake.url },
      protection: { kind: "none" },
      keyPackages: 1,
      publishIdentity: false,
    });
    const { groupId } = await alice.createGroup();
    const first = await bases(groupId);
    expect(first).toHaveLength(1);
    const before = await groupFile(groupId);
    expect(first[0]).toBe(`base-${before.stateBase}.json`);

    await alice.send(groupId, "one");
    const afterSend = await groupFile(groupId);
    expect(await bases(groupId)).toEqual(first);
    expect(afterSend.stateBase).toBe(before.stateBase);
    expect(afterSend.state).not.toBe(before.state); // the sender's ratchet moved on
    const baseBytes = (await readFile(join(dir, "groups", groupId, first[0]!))).byteLength;
    expect(Buffer.byteLength(afterSend.state)).toBeLessThan(baseBytes);

    await alice.selfUpdate(groupId);
    const afterCommit = await bases(groupId);
    expect(afterCommit).toHaveLength(1);
    expect(afterCommit).not.toEqual(first);
    expect(afterCommit[0]).toBe(`base-${(await groupFile(groupId)).stateBase}.json`);

    await alice.send(groupId, "two");
    const auth = alice.epochAuthenticator(groupId);
    const epoch = alice.epoch(groupId);
    const reopened = await MlsDmClient.open(dir, {
      services: new StaticResolver({ "a.test": { directory: fake.url, delivery: fake.url } }),
    });
    expect(reopened.epochAuthenticator(groupId)).toBe(auth);
    expect(reopened.epoch(groupId)).toBe(epoch);
    await reopened.send(groupId, "three");
    expect((await reopened.history(groupId)).length).toBe(3);
  });
});
