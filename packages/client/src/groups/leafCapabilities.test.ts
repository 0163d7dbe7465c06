import { cipherSuite, sha256 } from "@mastodon-mls/bridge";
import { createCommit, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";

// A member's own leaf that shuts the group to newcomers (found by an audit): bob's self-update whose leaf
// no longer lists the basic credential was accepted by screening and by ts-mls 1.6.4, after which every
// Add alice tried failed with "LeafNode has credential that is not supported by member of the group",
// with no event and nobody named. SCR-17 refuses it: a fork naming bob, so the group can be re-created
// without him.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "caps"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

/** bob's self-update, signed by him, whose new leaf lists only x509 credentials. */
async function narrowingUpdate(): Promise<Uint8Array> {
  // ts-mls builds the path's leaf from the committer's current one: bob edits his in his own state.
  const ratchetTree = [...bob.ratchetTree];
  const at = bob.privatePath.leafIndex * 2;
  const node = ratchetTree[at];
  if (node?.nodeType !== "leaf") throw new Error("no leaf");
  const capabilities = { ...node.leaf.capabilities, credentials: ["x509" as const] };
  ratchetTree[at] = { ...node, leaf: { ...node.leaf, capabilities } };
  const update = await createCommit(
    { state: { ...bob, ratchetTree }, cipherSuite: await cipherSuite() },
    { wireAsPublicMessage: true },
  );
  return encodeMlsMessage(update.commit);
}

describe("a member's update path that drops a capability the group uses", () => {
  it("SCR-17: is refused and reported as a fork naming its signer, not taken into the tree", async () => {
    const bytes = await narrowingUpdate();
    const seq = fake.inject(groupId, bobDevice.deviceId, bytes, 1, { commit: true });
    expect(await alice.sync()).toMatchObject([
      { type: "undecryptable", groupId, seq, reason: expect.stringMatching(/^SCR-17/) as string },
      {
        type: "group_forked",
        groupId,
        epoch: 1,
        commitSeq: seq,
        sender: { acct: "bob@a.test", deviceId: bobDevice.deviceId },
        senderProven: true,
        reason: "SCR-17",
      },
    ]);
    expect(alice.epoch(groupId)).toBe(1);
    expect(fake.forkReports).toEqual([
      {
        groupId,
        reporter: alice.deviceId,
        body: { epoch: 1, commit_hash: Buffer.from(sha256(bytes)).toString("base64url"), reason: "SCR-17" },
      },
    ]);
  });
});
