import { cipherSuite, deviceIdText } from "@mastodon-mls/bridge";
import { createCommit, createProposal, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "../testSupport/localDevices.js";

// LEAVE-1: a Remove proposal reads as "X is leaving" only when the proposing leaf and the removed one are
// certified by the same account key. A leaf's credential names whoever its maker chose: a member can add a
// leaf in bob's name under a key of its own.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "leave"));
  await alice.sync();
});
afterEach(() => fake.stop());

/** bob's commit adding `device` (epoch 1 to 2), delivered to alice; the new leaf's index. */
async function bobAdds(device: LocalDevice): Promise<number> {
  const cs = await cipherSuite();
  const kp = await device.keyPackage();
  const added = await createCommit(
    { state: bob, cipherSuite: cs },
    {
      extraProposals: [{ proposalType: "add", add: { keyPackage: kp.publicPackage } }],
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
    },
  );
  bob = added.newState;
  fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(added.commit), 1, { commit: true });
  await alice.sync();
  expect(alice.epoch(groupId)).toBe(2);
  for (let n = 0; n < bob.ratchetTree.length; n += 2) {
    const node = bob.ratchetTree[n];
    if (node?.nodeType === "leaf" && deviceIdText(node.leaf.signaturePublicKey) === device.deviceId)
      return n / 2;
  }
  throw new Error("the added leaf is not in the tree");
}

/** bob proposes the Remove of `leafIndex` (epoch 2); what alice makes of it. */
async function bobProposesRemove(leafIndex: number) {
  const proposal = await createProposal(
    bob,
    true,
    { proposalType: "remove", remove: { removed: leafIndex } },
    await cipherSuite(),
  );
  fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(proposal.message), 2);
  return (await alice.sync()).filter((e) => e.type === "member_leaving");
}

describe("who is leaving (LEAVE-1)", () => {
  it("a Remove between two leaves in one account's name, certified by different account keys, is no leave", async () => {
    // A leaf in bob's name under a key that is not bob's account key.
    const inBobsName = await localDevice("acct:bob@a.test");
    const leaf = await bobAdds(inBobsName);
    expect(await bobProposesRemove(leaf)).toEqual([]);
  });

  it("a Remove of another device certified by the same account key is that account leaving", async () => {
    const second = await bobDevice.sibling();
    const leaf = await bobAdds(second);
    expect(await bobProposesRemove(leaf)).toEqual([
      { type: "member_leaving", groupId, acct: "bob@a.test", deviceId: second.deviceId },
    ]);
  });
});
