import { cipherSuite } from "@mastodon-mls/bridge";
import { createCommit, encodeMlsMessage, type ClientState, type MLSMessage, type UpdatePath } from "ts-mls";
import { createMembershipTag } from "ts-mls/authenticatedContent.js";
import { signFramedContentTBS, toTbs } from "ts-mls/framedContent.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";

// A member's self-update whose update path is malformed, signed and tagged by him as his own client would
// (an audit's cases): ts-mls 1.6.4 refuses each with an error (none ends the process), which becomes an
// undecryptable event and a fork naming him (FORK-1, FORK-5: the tag verifies), and alice stays at her epoch.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "paths"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

const mutations: Record<string, (p: UpdatePath) => void> = {
  "no path nodes": (p) => {
    p.nodes = [];
  },
  "no path secret for alice": (p) => {
    p.nodes[0]!.encryptedPathSecret = [];
  },
  "5,000 path secrets": (p) => {
    p.nodes[0]!.encryptedPathSecret = Array(5000).fill(p.nodes[0]!.encryptedPathSecret[0]);
  },
  "a 3-byte node key": (p) => {
    p.nodes[0]!.hpkePublicKey = new Uint8Array(3);
  },
  "an empty KEM output": (p) => {
    p.nodes[0]!.encryptedPathSecret[0]!.kemOutput = new Uint8Array(0);
  },
  "an empty leaf key": (p) => {
    p.leafNode.hpkePublicKey = new Uint8Array(0);
  },
};

/** bob's self-update with its path changed, signed again and tagged again by him. */
async function mutated(mutate: (p: UpdatePath) => void): Promise<Uint8Array> {
  const cs = await cipherSuite();
  const update = await createCommit({ state: bob, cipherSuite: cs }, { wireAsPublicMessage: true });
  const msg: MLSMessage = update.commit;
  if (msg.wireformat !== "mls_public_message" || msg.publicMessage.content.contentType !== "commit") {
    throw new Error("not a commit");
  }
  const original = msg.publicMessage.content;
  const path = structuredClone(original.commit.path!);
  mutate(path);
  const content = { ...original, commit: { ...original.commit, path } };
  const contentTbs = toTbs(content, "mls_public_message", bob.groupContext);
  const signature = await signFramedContentTBS(bob.signaturePrivateKey, contentTbs, cs.signature);
  const auth = { ...msg.publicMessage.auth, signature };
  const membershipTag = await createMembershipTag(
    bob.keySchedule.membershipKey,
    { contentTbs, auth },
    cs.hash,
  );
  return encodeMlsMessage({
    ...msg,
    publicMessage: { ...msg.publicMessage, content, auth, membershipTag },
  } as MLSMessage);
}

describe("a self-update with a malformed update path", () => {
  for (const [name, mutate] of Object.entries(mutations)) {
    it(`${name}: a fork naming bob, proven; alice stays at epoch 1`, async () => {
      const seq = fake.inject(groupId, bobDevice.deviceId, await mutated(mutate), 1, { commit: true });
      expect(await alice.sync()).toMatchObject([
        { type: "undecryptable", seq, reason: expect.stringMatching(/^could not process/) as string },
        {
          type: "group_forked",
          commitSeq: seq,
          sender: { acct: "bob@a.test", deviceId: bobDevice.deviceId },
          senderProven: true,
          reason: "processing_failed",
        },
      ]);
      expect(alice.epoch(groupId)).toBe(1);
    });
  }
});
