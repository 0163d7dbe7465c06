import { cipherSuite, deviceIdText } from "@mastodon-mls/bridge";
import {
  createApplicationMessage,
  createCommit,
  encodeMlsMessage,
  type ClientState,
  type MLSMessage,
} from "ts-mls";
import { describe, expect, it } from "vitest";
import { twoMemberGroup } from "../testSupport/localDevices.js";
import { decodeMessage } from "./codec.js";
import { verifiedSigner } from "./commitSigner.js";
import { leafAt } from "./leaves.js";

// Who signed a commit (FORK-1, docs/protocol.md "Forks"): a hub can label a commit as anyone's, and can
// make up one it labels as a member's, but cannot sign one.

type Public = Extract<MLSMessage, { wireformat: "mls_public_message" }>;

/** bob's self-update of epoch 1 as alice receives it: through the wire encoding. */
async function bobsCommit(): Promise<{ alice: ClientState; bob: ClientState; commit: Public }> {
  const { alice, bob } = await twoMemberGroup();
  const built = await createCommit(
    { state: bob, cipherSuite: await cipherSuite() },
    { wireAsPublicMessage: true },
  );
  const commit = decodeMessage(encodeMlsMessage(built.commit));
  if (commit.wireformat !== "mls_public_message") throw new Error("not a PublicMessage");
  return { alice, bob: built.newState, commit };
}

/** A copy of `m` with `change` applied to it (the original untouched). */
function altered(m: Public, change: (c: Public) => void): Public {
  const copy = structuredClone(m);
  change(copy);
  return copy;
}

describe("verifiedSigner", () => {
  it("names the leaf and device of a genuine commit's signer", async () => {
    const cs = await cipherSuite();
    const { alice, commit } = await bobsCommit();
    const bobKey = leafAt(alice.ratchetTree, 1)!.signaturePublicKey;
    expect(await verifiedSigner(commit, alice, cs)).toEqual({ leafIndex: 1, deviceId: deviceIdText(bobKey) });
  });

  it("names nobody for a commit with a flipped signature byte, or one relabelled as another leaf's", async () => {
    const cs = await cipherSuite();
    const { alice, commit } = await bobsCommit();
    const flipped = altered(commit, (c) => {
      c.publicMessage.auth.signature[5]! ^= 0x01;
    });
    expect(await verifiedSigner(flipped, alice, cs)).toBeUndefined();
    const relabelled = altered(commit, (c) => {
      c.publicMessage.content.sender = { senderType: "member", leafIndex: 0 };
    });
    expect(await verifiedSigner(relabelled, alice, cs)).toBeUndefined();
  });

  it("names nobody, without throwing, for what a hostile hub may send instead", async () => {
    const cs = await cipherSuite();
    const { alice, bob, commit } = await bobsCommit();
    const garbage: MLSMessage[] = [
      altered(commit, (c) => {
        c.publicMessage.content.sender = { senderType: "member", leafIndex: 7 }; // no such leaf
      }),
      altered(commit, (c) => {
        c.publicMessage.content.sender = { senderType: "member", leafIndex: 2 ** 32 - 1 };
      }),
      altered(commit, (c) => {
        c.publicMessage.content.sender = { senderType: "member", leafIndex: -1 };
      }),
      altered(commit, (c) => {
        c.publicMessage.content.sender = { senderType: "external", senderIndex: 0 };
      }),
      altered(commit, (c) => {
        c.publicMessage.auth.signature = new Uint8Array(0);
      }),
      altered(commit, (c) => {
        c.publicMessage.auth.signature = Uint8Array.of(1, 2, 3);
      }),
      altered(commit, (c) => {
        c.publicMessage.content.epoch = 2n;
      }),
      altered(commit, (c) => {
        c.publicMessage.content.groupId = new Uint8Array(16).fill(9);
      }),
      // Not even a commit's shape (the encoding of what was signed throws).
      altered(commit, (c) => {
        (c.publicMessage.content as { commit?: unknown }).commit = undefined;
      }),
      // A PrivateMessage has no signature in the clear.
      {
        version: "mls10",
        wireformat: "mls_private_message",
        privateMessage: (await createApplicationMessage(bob, new Uint8Array(3), cs)).privateMessage,
      },
    ];
    for (const m of garbage) expect(await verifiedSigner(m, alice, cs)).toBeUndefined();
    // A genuine commit checked against the state of another epoch (the one it leads to).
    expect(await verifiedSigner(commit, bob, cs)).toBeUndefined();
    // A state whose leaf holds no usable key.
    const tree = [...alice.ratchetTree];
    tree[2] = { nodeType: "leaf", leaf: { ...leafAt(tree, 1)!, signaturePublicKey: new Uint8Array(5) } };
    expect(await verifiedSigner(commit, { ...alice, ratchetTree: tree }, cs)).toBeUndefined();
  });
});
