import { cipherSuite } from "@mastodon-mls/bridge";
import { createCommit, createProposal, encodeMlsMessage, type ClientState, type MLSMessage } from "ts-mls";
import { localDevice } from "../testSupport/localDevices.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";

// A hub that spoils the parts of an honest commit its sender's signature does not cover (found by an
// audit): the membership tag, or the confirmation tag under it. bob's signature still verifies, so alice,
// who cannot process the commit, named bob as its proven sender (FORK-1), and a re-created group left him
// out by default: a hub could have any member it liked left out. The membership tag is a MAC only members
// of the epoch can make; a commit whose tag does not verify proves nothing of its sender (FORK-5). Nor does
// one naming a proposal this device never got: the hub may have kept it back.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "tags"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

/** bob's honest self-update of epoch 1, one byte of one of its tags flipped by the hub. */
async function spoiled(tag: "membershipTag" | "confirmationTag"): Promise<Uint8Array> {
  const update = await createCommit(
    { state: bob, cipherSuite: await cipherSuite() },
    { wireAsPublicMessage: true },
  );
  const msg: MLSMessage = update.commit;
  if (msg.wireformat !== "mls_public_message" || msg.publicMessage.senderType !== "member") {
    throw new Error("not a member's PublicMessage");
  }
  const pm = msg.publicMessage;
  if (tag === "membershipTag") {
    const membershipTag = Uint8Array.from(pm.membershipTag);
    membershipTag[0] = membershipTag[0]! ^ 1;
    return encodeMlsMessage({ ...msg, publicMessage: { ...pm, membershipTag } });
  }
  if (pm.auth.contentType !== "commit") throw new Error("not a commit");
  const confirmationTag = Uint8Array.from(pm.auth.confirmationTag);
  confirmationTag[0] = confirmationTag[0]! ^ 1;
  return encodeMlsMessage({ ...msg, publicMessage: { ...pm, auth: { ...pm.auth, confirmationTag } } });
}

describe("a commit whose tags the hub spoiled", () => {
  for (const tag of ["membershipTag", "confirmationTag"] as const) {
    it(`FORK-5: with its ${tag} changed, names bob as the hub's word only`, async () => {
      const seq = fake.inject(groupId, bobDevice.deviceId, await spoiled(tag), 1, { commit: true });
      const events = await alice.sync();
      expect(events).toContainEqual(
        expect.objectContaining({
          type: "group_forked",
          commitSeq: seq,
          sender: { acct: "bob@a.test", deviceId: bobDevice.deviceId },
          senderProven: false,
        }),
      );
      const health = alice.groups().find((x) => x.groupId === groupId)!;
      expect(health.advice).toContain("the hub says bob@a.test sent it");
    });
  }

  it("FORK-5: a commit naming a proposal the hub kept from alice names bob as the hub's word only", async () => {
    const cs = await cipherSuite();
    const carol = await localDevice("acct:carol@a.test");
    const proposal = await createProposal(
      bob,
      true,
      { proposalType: "add", add: { keyPackage: (await carol.keyPackage()).publicPackage } },
      cs,
    );
    // bob commits his Add by reference; the hub delivers the commit and not the proposal.
    const commit = await createCommit(
      { state: proposal.newState, cipherSuite: cs },
      { wireAsPublicMessage: true },
    );
    const seq = fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(commit.commit), 1, {
      commit: true,
    });
    const events = await alice.sync();
    expect(events).toContainEqual(
      expect.objectContaining({
        type: "group_forked",
        commitSeq: seq,
        sender: { acct: "bob@a.test", deviceId: bobDevice.deviceId },
        senderProven: false,
        reason: "SCR-10",
      }),
    );
  });
});
