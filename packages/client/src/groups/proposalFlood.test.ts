import { statSync } from "node:fs";
import { join } from "node:path";
import { cipherSuite } from "@mastodon-mls/bridge";
import { LIMITS } from "@mastodon-mls/protocol";
import { createProposal, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "../testSupport/localDevices.js";

// A member flooding the epoch with proposals (found by an audit): Add proposals, which our clients never
// commit, were all screened and held in alice's group state, about 700 bytes each, until a commit; the
// state is rewritten on every save, so each message took longer than the one before (200 more held took
// 1.2 s to read, then 2.5 s, then 4.7 s; the hub's rate allows 1,200 per device every 10 minutes). SCR-19
// holds at most LIMITS.proposalsPerEpoch; the rest are undecryptable events.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "flood"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

describe("a member flooding an epoch with proposals", () => {
  it("SCR-19: holds at most proposalsPerEpoch of them, reports the rest, and the group still works", async () => {
    const cs = await cipherSuite();
    const carol = await localDevice("acct:carol@a.test");
    const keyPackage = (await carol.keyPackage()).publicPackage;
    const extra = 3;
    for (let i = 0; i < LIMITS.proposalsPerEpoch + extra; i++) {
      // The same Add each time, told apart by its authenticated data (so each has its own reference).
      const aad = new Uint8Array([i >> 8, i & 0xff]);
      const p = await createProposal(bob, true, { proposalType: "add", add: { keyPackage } }, cs, aad);
      fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(p.message), 1);
    }
    const events = await alice.sync();
    expect(events).toHaveLength(extra);
    for (const e of events) {
      expect(e).toMatchObject({
        type: "undecryptable",
        groupId,
        reason: expect.stringMatching(/^SCR-19/) as string,
      });
    }
    const groupJson = join(alice.dir, "groups", groupId, "group.json");
    expect(statSync(groupJson).size).toBeLessThan(LIMITS.proposalsPerEpoch * 1024);
    await alice.send(groupId, "still here");
  }, 120_000);
});
