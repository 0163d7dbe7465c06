import { mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { ClientError } from "../errors.js";
import { messageHash } from "../mls/codec.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { exists } from "../store/atomicFile.js";

// The bookkeeping of DESIGN §6/§9: group state on disk is never ahead of what the hub accepted; a commit
// whose answer was lost is settled later; a commit that lost its epoch is rebuilt and retried.

const NO_WAIT = { attempts: 4, baseDelayMs: 0, maxDelayMs: 0 };
let fake: FakeServices;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
});
afterEach(() => fake.stop());

async function alice(): Promise<MlsDmClient> {
  const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-race-")), "alice");
  return MlsDmClient.create({
    dir,
    acct: "@alice@a.test",
    mastodonToken: "token",
    protection: { kind: "none" },
    services: { directory: fake.url, delivery: fake.url },
    keyPackages: 1,
    publishIdentity: false,
    retry: NO_WAIT,
  });
}

async function onDiskEpoch(client: MlsDmClient, groupId: string): Promise<number> {
  const reopened = await MlsDmClient.open(client.dir, { retry: NO_WAIT });
  return reopened.epoch(groupId);
}

const pendingPath = (c: MlsDmClient, g: string) => join(c.dir, "groups", g, "pending.json");
/** The base snapshots on disk (context.ts saveGroup): the group's, and a pending commit's new state. */
const baseFiles = async (c: MlsDmClient, g: string) =>
  (await readdir(join(c.dir, "groups", g))).filter((f) => f.startsWith("base-")).length;

describe("commit bookkeeping", () => {
  it.each([
    ["comes back in the inbox", true],
    ["is named by the hub's 409 when posted again", false],
  ])(
    "a commit whose 201 was lost is kept pending, never promoted early, and settled when it %s",
    async (_, echo) => {
      fake.echoOwn = echo;
      const a = await alice();
      const { groupId } = await a.createGroup();
      fake.script = (s) => (s.isCommit ? "accept-then-drop" : "accept");
      const err = await a.selfUpdate(groupId).catch((e: unknown) => e);
      expect((err as ClientError).code).toBe("commit_outcome_unknown");
      expect(fake.epochOf(groupId)).toBe(1); // the hub did accept it
      expect(a.epoch(groupId)).toBe(0);
      expect(await onDiskEpoch(a, groupId)).toBe(0);
      expect(await exists(pendingPath(a, groupId))).toBe(true);
      expect(await baseFiles(a, groupId)).toBe(2); // the group's, and the pending commit's new state

      fake.script = () => "accept";
      const reopened = await MlsDmClient.open(a.dir, { retry: NO_WAIT });
      expect(await reopened.sync()).toEqual([]);
      expect(reopened.epoch(groupId)).toBe(1);
      expect(await exists(pendingPath(a, groupId))).toBe(false);
      expect(await baseFiles(a, groupId)).toBe(1);
      expect(fake.submissions.filter((s) => s.isCommit)).toHaveLength(echo ? 1 : 2);
      // and the group goes on: a message at the new epoch is accepted
      expect((await reopened.send(groupId, "after the lost answer")).epoch).toBe(1);
    },
  );

  it("a pending.json left by a crash after its state was saved is dropped, not applied again over later messages", async () => {
    const a = await alice();
    const { groupId } = await a.createGroup();
    await a.selfUpdate(groupId);
    // What a crash between saving the promoted state and deleting pending.json leaves: the record as it
    // was written before posting (rebuilt here from the files: the commit's base is the group's base now).
    const groupPath = join(a.dir, "groups", groupId, "group.json");
    const rec = JSON.parse(await readFile(groupPath, "utf8")) as { stateBase: string };
    const commit = fake.submissions.filter((s) => s.isCommit).at(-1)!;
    await a.send(groupId, "after the commit");
    const after = await readFile(groupPath, "utf8");
    expect((JSON.parse(after) as { secretNodes: unknown[] }).secretNodes).toHaveLength(1);
    await writeFile(
      pendingPath(a, groupId),
      JSON.stringify({
        format: "mls-dm.pending-commit",
        v: 2,
        intent: { kind: "update" },
        epoch: 0,
        commitHash: messageHash(commit.bytes),
        commit: Buffer.from(commit.bytes).toString("base64url"),
        welcome: null,
        newStateBase: rec.stateBase,
        invitees: [],
      }),
    );
    const reopened = await MlsDmClient.open(a.dir, { retry: NO_WAIT });
    await reopened.sync();
    expect(await exists(pendingPath(a, groupId))).toBe(false);
    // The state is still the one after the message: the sender's ratchet did not go back.
    const stateOf = (text: string) => {
      const r = JSON.parse(text) as { state: string; stateBase: string; secretNodes: unknown };
      return [r.state, r.stateBase, r.secretNodes];
    };
    expect(stateOf(await readFile(groupPath, "utf8"))).toEqual(stateOf(after));
    expect((await reopened.send(groupId, "and on")).epoch).toBe(1);
  });

  it("keeps a commit pending on a 5xx answer (the hub may have accepted it) and settles it later", async () => {
    fake.echoOwn = true;
    const a = await alice();
    const { groupId } = await a.createGroup();
    fake.script = (s) => (s.isCommit ? "accept-then-503" : "accept");
    const err = await a.selfUpdate(groupId).catch((e: unknown) => e);
    expect((err as ClientError).code).toBe("commit_outcome_unknown");
    expect(fake.epochOf(groupId)).toBe(1);
    expect(await exists(pendingPath(a, groupId))).toBe(true);
    fake.script = () => "accept";
    await a.sync();
    expect(a.epoch(groupId)).toBe(1);
    expect(await exists(pendingPath(a, groupId))).toBe(false);
    expect((await a.send(groupId, "after the 503")).epoch).toBe(1);
  });

  it("drops a commit that lost its epoch to another, catches up, rebuilds and retries", async () => {
    const a = await alice();
    const { groupId } = await a.createGroup();
    let refusals = 2;
    fake.script = (s) =>
      s.isCommit && refusals-- > 0
        ? {
            status: 409,
            body: { error: "wrong_epoch", message: "lost", epoch: 0, commit_hash: "someone-else" },
          }
        : "accept";
    await a.selfUpdate(groupId);
    const commits = fake.submissions.filter((s) => s.isCommit);
    expect(commits).toHaveLength(3);
    // rebuilt each time: fresh path secrets, so different bytes
    expect(new Set(commits.map((c) => Buffer.from(c.bytes).toString("hex"))).size).toBe(3);
    expect(a.epoch(groupId)).toBe(1);
    expect(await exists(pendingPath(a, groupId))).toBe(false);
    expect(await baseFiles(a, groupId)).toBe(1); // the losers' new states are gone
    expect(await onDiskEpoch(a, groupId)).toBe(1);
  });

  it("gives up after the configured attempts, leaving the state as the hub has it", async () => {
    const a = await alice();
    const { groupId } = await a.createGroup();
    fake.script = (s) =>
      s.isCommit
        ? { status: 409, body: { error: "wrong_epoch", message: "lost", epoch: 0, commit_hash: null } }
        : "accept";
    await expect(a.selfUpdate(groupId)).rejects.toMatchObject({ code: "commit_conflict" });
    expect(fake.submissions.filter((s) => s.isCommit)).toHaveLength(NO_WAIT.attempts);
    expect(a.epoch(groupId)).toBe(0);
    expect(await exists(pendingPath(a, groupId))).toBe(false);
    expect(await baseFiles(a, groupId)).toBe(1);
    expect(await onDiskEpoch(a, groupId)).toBe(0);
  });

  it("discards a commit the hub refuses outright and keeps the old state", async () => {
    const a = await alice();
    const { groupId } = await a.createGroup();
    fake.script = (s) =>
      s.isCommit
        ? { status: 422, body: { error: "screening_failed", message: "SCR-12: no path." } }
        : "accept";
    await expect(a.selfUpdate(groupId)).rejects.toMatchObject({ code: "screening_failed" });
    expect(a.epoch(groupId)).toBe(0);
    expect(await exists(pendingPath(a, groupId))).toBe(false);
    expect(await baseFiles(a, groupId)).toBe(1);
  });

  it("saves the advanced ratchet before posting an application message", async () => {
    const a = await alice();
    const { groupId } = await a.createGroup();
    const before = await readFile(join(a.dir, "groups", groupId, "group.json"), "utf8");
    fake.script = () => ({ status: 503, body: { error: "store_unavailable", message: "down" } });
    // The hub's 503 may come after its store took the message: the outcome is unknown, and said so.
    await expect(a.send(groupId, "lost")).rejects.toMatchObject({
      code: "message_outcome_unknown",
      message: expect.stringContaining("store_unavailable") as unknown,
    });
    const after = await readFile(join(a.dir, "groups", groupId, "group.json"), "utf8");
    expect(after).not.toBe(before); // the generation used is burnt on disk, never reused after a crash
    fake.script = () => "accept";
    const sent = await a.send(groupId, "hello");
    expect((await a.history(groupId)).map((h) => h.seq)).toEqual([sent.seq]);
  });
});
