import { cipherSuite } from "@mastodon-mls/bridge";
import { createCommit, createProposal, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { noteFrom, aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "../testSupport/localDevices.js";

// Another member's message that the hub labels as this device's own (found by an audit). The label is
// the hub's word only (FORK-1, OWN-2), yet an application message or a proposal so labelled was taken for
// an echo and skipped without a word: bob's message never shown, his proposal never held (his commit of
// it then could not be followed). Now what another member's key sent is read as anyone's (OWN-4).

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "ownlabel"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

describe("another member's message labelled as this device's own", () => {
  it("OWN-4: an application message is read as bob's", async () => {
    const said = await noteFrom(bob, "bob@a.test", "mine, not alice's");
    bob = said.newState;
    const bytes = said.bytes;
    fake.inject(groupId, alice.deviceId, bytes, 1);
    expect(await alice.sync()).toMatchObject([
      {
        type: "message",
        from: "bob@a.test",
        deviceId: bobDevice.deviceId,
        note: { content: "mine, not alice's" },
      },
    ]);
  });

  it("OWN-4: a proposal is held, so bob's commit of it is followed", async () => {
    const cs = await cipherSuite();
    const carol = await localDevice("acct:carol@a.test");
    const proposal = await createProposal(
      bob,
      true,
      { proposalType: "add", add: { keyPackage: (await carol.keyPackage()).publicPackage } },
      cs,
    );
    const commit = await createCommit(
      { state: proposal.newState, cipherSuite: cs },
      { wireAsPublicMessage: true },
    );
    fake.inject(groupId, alice.deviceId, encodeMlsMessage(proposal.message), 1);
    fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(commit.commit), 1, { commit: true });
    const events = await alice.sync();
    expect(events.filter((e) => e.type === "group_forked" || e.type === "undecryptable")).toEqual([]);
    expect(alice.epoch(groupId)).toBe(2);
  });
});
