import { cpSync } from "node:fs";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toBase64url } from "@mastodon-mls/protocol";
import { encodeGroupStateWithoutTree } from "ts-mls/clientState.js";
import { MlsDmClient } from "../client.js";
import { decodeState, decodeStateDelta } from "../mls/codec.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { StaticResolver } from "../transport/resolver.js";
import { DeviceStore } from "./deviceStore.js";
import { LOCK_FILE } from "./lock.js";

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
    secretNodes?: [number, string][];
  };

/** A device on plain files (the tests read them) in a group of its own. */
async function aliceInAGroup(): Promise<{ alice: MlsDmClient; groupId: string }> {
  const alice = await MlsDmClient.create({
    dir,
    acct: "alice@a.test",
    mastodonToken: "t",
    services: { directory: fake.url, delivery: fake.url },
    protection: { kind: "none" },
    keyPackages: 1,
    publishIdentity: false,
  });
  return { alice, groupId: (await alice.createGroup()).groupId };
}

describe("group state files", () => {
  it("a message rewrites only group.json; a commit writes a new base and drops the old; reopening restores the state", async () => {
    const { alice, groupId } = await aliceInAGroup();
    const first = await bases(groupId);
    expect(first).toHaveLength(1);
    const before = await groupFile(groupId);
    expect(first[0]).toBe(`base-${before.stateBase}.json`);

    const membersPath = join(dir, "groups", groupId, "members.json");
    const members = await readFile(membersPath);
    await alice.send(groupId, "one");
    const afterSend = await groupFile(groupId);
    // The leaf checks live in members.json, untouched by a message; group.json carries none.
    expect((await readFile(membersPath)).equals(members)).toBe(true);
    expect((afterSend as unknown as { leaves: object }).leaves).toEqual({});
    expect(Object.keys((JSON.parse(members.toString("utf8")) as { leaves: object }).leaves)).toEqual(["0"]);
    expect(await bases(groupId)).toEqual(first);
    expect(afterSend.stateBase).toBe(before.stateBase);
    // The sender's ratchet moved on: one secret-tree node (leaf 0's, node 0) differs from the base's.
    expect(before.secretNodes).toEqual([]);
    expect(afterSend.secretNodes?.map(([i]) => i)).toEqual([0]);
    const baseBytes = (await readFile(join(dir, "groups", groupId, first[0]!))).byteLength;
    expect(afterSend.state.length + JSON.stringify(afterSend.secretNodes).length).toBeLessThan(baseBytes);
    await alice.send(groupId, "one more");
    const again = await groupFile(groupId);
    expect(again.secretNodes?.map(([i]) => i)).toEqual([0]);
    expect(again.secretNodes).not.toEqual(afterSend.secretNodes);

    await alice.selfUpdate(groupId);
    const afterCommit = await bases(groupId);
    expect(afterCommit).toHaveLength(1);
    expect(afterCommit).not.toEqual(first);
    expect(afterCommit[0]).toBe(`base-${(await groupFile(groupId)).stateBase}.json`);

    // The commit's state was written as a base before posting and became the group's base as it was.
    expect((await groupFile(groupId)).secretNodes).toEqual([]);
    expect(await readdir(join(dir, "groups", groupId))).not.toContain("pending.json");

    await alice.send(groupId, "two");
    const auth = alice.epochAuthenticator(groupId);
    const epoch = alice.epoch(groupId);
    const reopened = await MlsDmClient.open(dir, {
      services: new StaticResolver({ "a.test": { directory: fake.url, delivery: fake.url } }),
    });
    expect(reopened.epochAuthenticator(groupId)).toBe(auth);
    expect(reopened.epoch(groupId)).toBe(epoch);
    // The leaf check came back from members.json: the own leaf is not "not checked".
    expect(reopened.members(groupId)[0]?.reason).not.toBe("not checked");
    await reopened.send(groupId, "three");
    expect((await reopened.history(groupId)).length).toBe(4);
  });

  it("a base snapshot changed on disk (no encryption, so no MAC) is refused by name, not decoded into wrong keys", async () => {
    const { groupId } = await aliceInAGroup();
    const [base] = await bases(groupId);
    const path = join(dir, "groups", groupId, base!);
    const record = JSON.parse(await readFile(path, "utf8")) as { state: string };
    // One character of the encoded state changed, as a bit flip on disk would.
    const i = Math.floor(record.state.length / 2);
    const flipped = record.state[i] === "A" ? "B" : "A";
    record.state = record.state.slice(0, i) + flipped + record.state.slice(i + 1);
    await writeFile(path, JSON.stringify(record));
    await expect(MlsDmClient.open(dir)).rejects.toThrow(/damaged \(its hash differs\)/);
  });

  it("a crash after a commit's new state was written, before the commit was saved as pending, loses nothing", async () => {
    const opts = {
      services: new StaticResolver({ "a.test": { directory: fake.url, delivery: fake.url } }),
    };
    const { alice, groupId } = await aliceInAGroup();
    await alice.send(groupId, "before");
    const epoch = alice.epoch(groupId);
    const auth = alice.epochAuthenticator(groupId);

    // The disk as it is when pending.json is about to appear: the commit's base snapshot is there already.
    const crashDir = `${dir}-after-crash`;
    const store = await DeviceStore.open(dir, {
      hooks: {
        beforeRename: (temp) => {
          if (!temp.includes("pending.json")) return;
          cpSync(dir, crashDir, { recursive: true, filter: (src) => !src.endsWith(LOCK_FILE) });
          throw new Error("power cut");
        },
      },
    });
    const doomed = await MlsDmClient.openStore(store, opts);
    await expect(doomed.selfUpdate(groupId)).rejects.toThrow("power cut");

    dir = crashDir;
    expect(await bases(groupId)).toHaveLength(2); // the group's, and the orphan the crash left
    const restarted = await MlsDmClient.open(crashDir, opts);
    expect(restarted.epoch(groupId)).toBe(epoch);
    expect(restarted.epochAuthenticator(groupId)).toBe(auth);
    await restarted.selfUpdate(groupId);
    expect(restarted.epoch(groupId)).toBe(epoch + 1);
    expect(await bases(groupId)).toEqual([`base-${(await groupFile(groupId)).stateBase}.json`]);
    await restarted.send(groupId, "after");
    expect((await restarted.history(groupId)).length).toBe(2);
  });

  it("opens a group.json of the earlier kind (the secret tree inside the delta), and writes the new kind", async () => {
    const { alice, groupId } = await aliceInAGroup();
    await alice.send(groupId, "one");
    const auth = alice.epochAuthenticator(groupId);
    const path = join(dir, "groups", groupId, "group.json");
    const rec = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    expect(rec.format).toBe("mls-dm.group-delta");
    const base = JSON.parse(
      await readFile(join(dir, "groups", groupId, `base-${String(rec.stateBase)}.json`), "utf8"),
    ) as { state: string };
    const state = decodeStateDelta(
      rec.state as string,
      decodeState(base.state),
      rec.secretNodes as [number, string][],
    );
    rec.format = "mls-dm.group";
    rec.state = toBase64url(encodeGroupStateWithoutTree({ ...state, historicalReceiverData: new Map() }));
    delete rec.secretNodes;
    await writeFile(path, JSON.stringify(rec));

    const opts = { services: new StaticResolver({ "a.test": { directory: fake.url, delivery: fake.url } }) };
    const reopened = await MlsDmClient.open(dir, opts);
    expect(reopened.epochAuthenticator(groupId)).toBe(auth);
    await reopened.send(groupId, "two");
    expect((JSON.parse(await readFile(path, "utf8")) as { format: string }).format).toBe(
      "mls-dm.group-delta",
    );
    expect((await (await MlsDmClient.open(dir, opts)).history(groupId)).length).toBe(2);
  });
});
