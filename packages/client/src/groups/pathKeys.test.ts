import { cipherSuite, profileClientConfig, sha256 } from "@mastodon-mls/bridge";
import {
  createCommit,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  type CiphersuiteImpl,
  type ClientState,
} from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { decodeMessage } from "../mls/codec.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "../testSupport/localDevices.js";

// A member's update path bringing an encryption key the tree holds already (found by an audit): bob's
// self-update whose new leaf carries alice's leaf key was taken by screening and ts-mls 1.6.4, after which
// alice's every Add failed with "hpke keys not unique" (nobody could join the group again), with no event
// and nobody named. SCR-18 refuses it: a fork naming bob.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "pathkeys"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

/**
 * bob's self-update, signed by him and with a valid confirmation tag, whose new leaf carries alice's leaf
 * key: ts-mls builds it, with a ciphersuite that hands out her key as the export of his new leaf key.
 */
async function updateReusingAlicesKey(): Promise<Uint8Array> {
  const real = await cipherSuite();
  const aliceLeaf = bob.ratchetTree[0];
  if (aliceLeaf?.nodeType !== "leaf") throw new Error("no leaf 0");
  let leafKey: unknown; // the first key pair derived for a path is its leaf's
  const cs: CiphersuiteImpl = {
    ...real,
    hpke: {
      ...real.hpke,
      deriveKeyPair: async (ikm) => {
        const pair = await real.hpke.deriveKeyPair(ikm);
        leafKey ??= pair.publicKey;
        return pair;
      },
      exportPublicKey: async (key) =>
        key === leafKey ? aliceLeaf.leaf.hpkePublicKey : real.hpke.exportPublicKey(key),
    },
  };
  const update = await createCommit({ state: bob, cipherSuite: cs }, { wireAsPublicMessage: true });
  return encodeMlsMessage(update.commit);
}

describe("a member's update path that reuses a key of the tree", () => {
  it("SCR-18: is refused and reported as a fork naming its signer; the group still takes new members", async () => {
    const bytes = await updateReusingAlicesKey();
    const seq = fake.inject(groupId, bobDevice.deviceId, bytes, 1, { commit: true });
    expect(await alice.sync()).toMatchObject([
      { type: "undecryptable", groupId, seq, reason: expect.stringMatching(/^SCR-18/) as string },
      {
        type: "group_forked",
        groupId,
        epoch: 1,
        commitSeq: seq,
        sender: { acct: "bob@a.test", deviceId: bobDevice.deviceId },
        senderProven: true,
        reason: "SCR-18",
      },
    ]);
    expect(alice.epoch(groupId)).toBe(1);
    expect(fake.forkReports).toMatchObject([
      { groupId, body: { epoch: 1, commit_hash: Buffer.from(sha256(bytes)).toString("base64url") } },
    ]);

    // Re-created without bob (the user's call, D10), the group takes carol, who joins by its Welcome.
    const carol = await localDevice("acct:carol@a.test");
    const kp = await carol.keyPackage();
    fake.keyPackages.set("carol@a.test", { deviceId: carol.deviceId, keyPackage: kp.encoded });
    const recreated = await alice.recreateGroup(groupId, { allowUnverified: true });
    await alice.addMembers(recreated.groupId, ["carol@a.test"], { allowUnverified: true });
    const welcome = decodeMessage(fake.lastWelcome!);
    if (welcome.wireformat !== "mls_welcome") throw new Error("no Welcome");
    const joined = await joinGroup(
      welcome.welcome,
      kp.publicPackage,
      kp.privatePackage,
      emptyPskIndex,
      await cipherSuite(),
      undefined,
      undefined,
      profileClientConfig(),
    );
    expect(joined.groupContext.epoch).toBeGreaterThan(0n);
  });
});
