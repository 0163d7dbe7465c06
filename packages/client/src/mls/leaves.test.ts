import {
  cipherSuite,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  profileClientConfig,
  signDeviceCertificate,
} from "@mastodon-mls/bridge";
import { createCommit, createGroup } from "ts-mls";
import { describe, expect, it } from "vitest";
import { localDevice } from "../testSupport/localDevices.js";
import { checkLeaves, diffMembers, leavesOf } from "./leaves.js";

/** A KeyPackage whose certificate was issued for another account than its credential names. */
async function lyingKeyPackage() {
  const account = await generateSigningKeyPair();
  const sig = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity: "acct:mallory@a.test",
      accountKey: account.publicKey,
      sigKey: sig.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    account.signKey,
  );
  return generateDeviceKeyPackage({ identity: "acct:bob@a.test", signatureKeyPair: sig, certificate });
}

describe("leaf checks", () => {
  it("marks a leaf whose certificate does not match its credential invalid, keeps results for unchanged leaves, and diffs members", async () => {
    const cs = await cipherSuite();
    const alice = await localDevice("acct:alice@a.test");
    const carol = await localDevice("acct:carol@b.test");
    const akp = await alice.keyPackage();
    const g0 = await createGroup(
      new Uint8Array(16),
      akp.publicPackage,
      akp.privatePackage,
      [],
      cs,
      profileClientConfig(),
    );
    const first = await checkLeaves(g0.ratchetTree, {});
    expect(first.newlyInvalid).toEqual([]);
    expect(first.checks["0"]).toMatchObject({ acct: "alice@a.test", status: "unverified" });

    const bad = await lyingKeyPackage();
    const good = await carol.keyPackage();
    const added = await createCommit(
      { state: g0, cipherSuite: cs },
      {
        extraProposals: [bad, good].map((k) => ({
          proposalType: "add" as const,
          add: { keyPackage: k.publicPackage },
        })),
        wireAsPublicMessage: true,
      },
    );
    const second = await checkLeaves(added.newState.ratchetTree, first.checks);
    expect(second.checks["0"]).toBe(first.checks["0"]); // unchanged leaf: not verified again
    expect(second.newlyInvalid.map((c) => c.acct)).toEqual(["bob@a.test"]);
    expect(second.checks["1"]).toMatchObject({
      status: "invalid",
      reason: expect.stringMatching(/another account/) as string,
    });
    expect(second.checks["2"]).toMatchObject({ acct: "carol@b.test", status: "unverified" });
    expect(leavesOf(added.newState.ratchetTree).map((l) => l.leafIndex)).toEqual([0, 1, 2]);
    expect(diffMembers(g0.ratchetTree, added.newState.ratchetTree)).toEqual({
      added: ["bob@a.test", "carol@b.test"],
      removed: [],
    });
  });
});
