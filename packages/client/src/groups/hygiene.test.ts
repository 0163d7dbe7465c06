import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { cipherSuite } from "@mastodon-mls/bridge";
import {
  acceptAll,
  createCommit,
  createProposal,
  emptyPskIndex,
  encodeMlsMessage,
  processMessage,
  type ClientState,
  type MLSMessage,
} from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { ClientError } from "../errors.js";
import { decodeCleartext } from "@mastodon-mls/protocol";
import { decodeMessage } from "../mls/codec.js";
import { aliceAndBobOnFake, NO_WAIT } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";
import { SELF_UPDATE_INTERVAL_SECONDS } from "./followUp.js";

// Group hygiene against a scripted hub: alice is an MlsDmClient, bob is driven with ts-mls directly, so
// the test decides what alice receives. Leave proposals (DESIGN §9), the weekly self-update (DESIGN §2),
// and two clients on one directory (two processes).

const DAY = 24 * 3600 * 1000;
let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;
let now: number;
const clock = () => now;

beforeEach(async () => {
  now = Date.UTC(2030, 0, 1);
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "hygiene", clock));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

const commits = () => fake.submissions.filter((s) => s.isCommit);

async function bobProposes(removed: number): Promise<ClientState> {
  const r = await createProposal(
    bob,
    true,
    { proposalType: "remove", remove: { removed } },
    await cipherSuite(),
  );
  fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(r.message), 1);
  return r.newState;
}

function asGroupMessage(bytes: Uint8Array) {
  const m: MLSMessage = decodeMessage(bytes);
  if (m.wireformat !== "mls_public_message" && m.wireformat !== "mls_private_message")
    throw new Error(m.wireformat);
  return m;
}

describe("leave (DESIGN §9)", () => {
  it("a member's proposal to remove itself is committed at once; the leaver's own state accepts that commit", async () => {
    const bobWithProposal = await bobProposes(bob.privatePath.leafIndex);
    const events = await alice.sync();
    expect(events).toContainEqual({
      type: "member_leaving",
      groupId,
      acct: "bob@a.test",
      deviceId: bobDevice.deviceId,
    });
    expect(commits()).toHaveLength(2); // the Add, then the Remove
    expect(alice.epoch(groupId)).toBe(2);
    expect(alice.members(groupId).map((m) => m.acct)).toEqual(["alice@a.test"]);
    // The commit names bob's proposal by reference: bob's ts-mls state (holding it) processes it.
    const result = await processMessage(
      asGroupMessage(commits().at(-1)!.bytes),
      bobWithProposal,
      emptyPskIndex,
      acceptAll,
      await cipherSuite(),
    );
    expect(result.newState.groupActiveState.kind).toBe("removedFromGroup");
    expect(await alice.sync()).toEqual([]); // nothing left to do
  });

  it("holding a proposal it could not commit yet, sending commits it first instead of failing", async () => {
    fake.script = (s) =>
      s.isCommit ? { status: 503, body: { error: "store_unavailable", message: "down" } } : "accept";
    await bobProposes(bob.privatePath.leafIndex);
    const events = await alice.sync();
    expect(events).toContainEqual(
      expect.objectContaining({ type: "error", operation: "commit received proposals" }),
    );
    expect(alice.epoch(groupId)).toBe(1); // the proposal is held, uncommitted
    // Until it is committed, bob's leaf shows as leaving (and `leave --with` does not count it).
    expect(alice.members(groupId).map((m) => [m.acct, m.leaving ?? false])).toEqual([
      ["alice@a.test", false],
      ["bob@a.test", true],
    ]);
    fake.script = () => "accept";
    const sent = await alice.send(groupId, "after bob left");
    expect(sent.epoch).toBe(2);
    const last = fake.submissions.slice(-2);
    expect(last.map((s) => s.isCommit)).toEqual([true, false]);
    expect(alice.members(groupId).map((m) => m.acct)).toEqual(["alice@a.test"]);
  });

  it("a proposal to remove this device is left to others, and does not block sending", async () => {
    const bobWithProposal = await bobProposes(0);
    expect(await alice.sync()).toEqual([]);
    expect(commits()).toHaveLength(1);
    expect((await alice.send(groupId, "still talking")).epoch).toBe(1);
    // bob commits it (by reference): alice, who kept the proposal in her state, processes it.
    const removal = await createCommit(
      { state: bobWithProposal, cipherSuite: await cipherSuite() },
      { wireAsPublicMessage: true },
    );
    fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(removal.commit), 1, { commit: true });
    expect(await alice.sync()).toContainEqual({ type: "removed_from_group", groupId });
    expect(alice.groups()).toMatchObject([{ groupId, status: "left" }]);
  });

  it("a leave whose proposal lost its epoch to another commit is still carried out, by value", async () => {
    const before = bob;
    await bobProposes(bob.privatePath.leafIndex);
    // Another commit closes epoch 1 without the proposal (made from a state that never held it).
    const other = await createCommit(
      { state: before, cipherSuite: await cipherSuite() },
      { wireAsPublicMessage: true },
    );
    fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(other.commit), 1, { commit: true });
    const events = await alice.sync();
    expect(events.filter((e) => e.type === "error" || e.type === "undecryptable")).toEqual([]);
    expect(alice.epoch(groupId)).toBe(3);
    expect(alice.members(groupId).map((m) => m.acct)).toEqual(["alice@a.test"]);
    const removal = decodeMessage(commits().at(-1)!.bytes);
    if (
      removal.wireformat !== "mls_public_message" ||
      removal.publicMessage.content.contentType !== "commit"
    ) {
      throw new Error("not a commit");
    }
    expect(removal.publicMessage.content.commit.proposals).toEqual([
      { proposalOrRefType: "proposal", proposal: { proposalType: "remove", remove: { removed: 1 } } },
    ]);
  });

  it("leaving deletes the group's keys here and keeps its history; nobody else left means no proposal", async () => {
    const { groupId: solo } = await alice.createGroup();
    await alice.send(solo, "note to self");
    const posted = fake.submissions.length;
    expect(await alice.leave(solo)).toEqual({ proposed: 0 });
    expect(fake.submissions.length).toBe(posted);
    // Left at the hub too (D17), so that the group stops counting against this device there.
    expect(fake.departures).toEqual([{ groupId: solo, device: alice.deviceId }]);
    expect(alice.groups().find((g) => g.groupId === solo)).toMatchObject({
      status: "left",
      epoch: undefined,
    });
    expect((await alice.history(solo)).length).toBe(1);
    const record = JSON.parse(await readFile(join(alice.dir, "groups", solo, "group.json"), "utf8")) as {
      state: unknown;
    };
    expect(record.state).toBeNull();
    expect(() => alice.epoch(solo)).toThrow(ClientError);
    // With bob in the group: one Remove proposal, posted as a PublicMessage.
    expect(await alice.leave(groupId)).toEqual({ proposed: 1 });
    expect(fake.departures.map((d) => d.groupId)).toEqual([solo, groupId]);
    const proposal = decodeMessage(fake.submissions.at(-1)!.bytes);
    expect(proposal.wireformat === "mls_public_message" && proposal.publicMessage.content.contentType).toBe(
      "proposal",
    );
  });
});

describe("leaving at the hub (D17)", () => {
  it("is done at the next read of the hub when the hub could not take it at once", async () => {
    fake.failDepartures = 1;
    expect(await alice.leave(groupId)).toEqual({ proposed: 1 });
    expect(alice.groups().find((g) => g.groupId === groupId)).toMatchObject({ status: "left" });
    expect(fake.departures).toEqual([]);
    const record = () =>
      readFile(join(alice.dir, "groups", groupId, "group.json"), "utf8").then(
        (t) => JSON.parse(t) as { departPendingSince?: number },
      );
    expect((await record()).departPendingSince).toBe(Math.floor(now / 1000));
    const events = await alice.sync();
    expect(fake.departures).toEqual([{ groupId, device: alice.deviceId }]);
    expect((await record()).departPendingSince).toBeUndefined();
    expect(events).toContainEqual(expect.objectContaining({ type: "error", operation: "leave at the hub" }));
    // Done: later reads ask nothing more.
    await alice.sync();
    expect(fake.departures).toHaveLength(1);
  });
});

describe("weekly self-update (DESIGN §2)", () => {
  it("updates a group whose own leaf is over a week old, on sync, and only then", async () => {
    expect(SELF_UPDATE_INTERVAL_SECONDS).toBe(7 * 24 * 3600);
    now += 6 * DAY;
    expect(await alice.sync()).toEqual([]);
    expect(commits()).toHaveLength(1);
    now += 1 * DAY + 1000;
    expect(await alice.sync()).toEqual([]);
    expect(commits()).toHaveLength(2);
    expect(alice.epoch(groupId)).toBe(2);
    // bob, a real member, accepts it.
    bob = (
      await processMessage(
        asGroupMessage(commits()[1]!.bytes),
        bob,
        emptyPskIndex,
        acceptAll,
        await cipherSuite(),
      )
    ).newState;
    expect(Buffer.from(bob.keySchedule.epochAuthenticator).toString("base64url")).toBe(
      alice.epochAuthenticator(groupId),
    );
    // The time is on disk: reopening does not update again, a week later does.
    expect(await (await MlsDmClient.open(alice.dir, { clock, retry: NO_WAIT })).sync()).toEqual([]);
    expect(commits()).toHaveLength(2);
    now += 7 * DAY + 1000;
    await (await MlsDmClient.open(alice.dir, { clock, retry: NO_WAIT })).sync();
    expect(commits()).toHaveLength(3);
  });

  it("any commit of ours with an update path counts as the update", async () => {
    now += 5 * DAY;
    await alice.selfUpdate(groupId);
    now += 5 * DAY;
    await alice.sync();
    expect(commits()).toHaveLength(2);
  });
});

describe("two processes on one device directory", () => {
  it("the second re-reads what the first changed: no key generation is used twice", async () => {
    const other = await MlsDmClient.open(alice.dir, { clock, retry: NO_WAIT }); // as another process would
    await alice.send(groupId, "one");
    await other.send(groupId, "two");
    await alice.send(groupId, "three");
    const texts: string[] = [];
    for (const s of fake.submissions.filter((x) => !x.isCommit)) {
      const r = await processMessage(
        asGroupMessage(s.bytes),
        bob,
        emptyPskIndex,
        acceptAll,
        await cipherSuite(),
      );
      bob = r.newState;
      if (r.kind !== "applicationMessage") throw new Error("not an application message");
      const clear = decodeCleartext(r.message);
      texts.push(
        clear.kind === "activity" && clear.activity.type === "Create" ? clear.activity.object.content : "?",
      );
    }
    expect(texts).toEqual(["one", "two", "three"]);
    const { groupId: second } = await alice.createGroup();
    expect(other.groups().map((g) => g.groupId)).not.toContain(second);
    await other.refresh();
    expect(other.groups().map((g) => g.groupId)).toContain(second);
  });

  it("waits for the lock, breaks a lock left by a dead process, and says which process is busy", async () => {
    const lock = join(alice.dir, "lock");
    const impatient = await MlsDmClient.open(alice.dir, { retry: NO_WAIT, lockTimeoutMs: 100 });
    await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), token: "held" }));
    const busy = await impatient.send(groupId, "blocked").catch((e: unknown) => e);
    expect((busy as ClientError).code).toBe("device_busy");
    expect((busy as Error).message).toContain(`pid ${process.pid}`);
    await writeFile(lock, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), token: "dead" }));
    expect((await impatient.send(groupId, "after a crash")).epoch).toBe(1);
    await expect(readFile(lock)).rejects.toThrow(/ENOENT/);
  });
});
