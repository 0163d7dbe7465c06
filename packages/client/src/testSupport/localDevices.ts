import {
  cipherSuite,
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  profileClientConfig,
  signDeviceCertificate,
  type GeneratedKeyPackage,
} from "@mastodon-mls/bridge";
import { createCommit, createGroup, emptyPskIndex, joinGroup, type ClientState } from "ts-mls";

// Test support: devices and a two-member group built with ts-mls directly, no services involved.

export interface LocalDevice {
  identity: string;
  deviceId: string;
  keyPackage: () => Promise<GeneratedKeyPackage>;
  /** Another device of the same account, certified by the same account key. */
  sibling: () => Promise<LocalDevice>;
}

export async function localDevice(
  identity: string,
  account?: Awaited<ReturnType<typeof generateSigningKeyPair>>,
): Promise<LocalDevice> {
  account ??= await generateSigningKeyPair();
  const sig = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: sig.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    account.signKey,
  );
  return {
    identity,
    deviceId: deviceIdText(sig.publicKey),
    keyPackage: () => generateDeviceKeyPackage({ identity, signatureKeyPair: sig, certificate }),
    sibling: () => localDevice(identity, account),
  };
}

export async function twoMemberGroup(): Promise<{ alice: ClientState; bob: ClientState }> {
  const cs = await cipherSuite();
  const a = await localDevice("acct:alice@a.test");
  const b = await localDevice("acct:bob@a.test");
  const akp = await a.keyPackage();
  const bkp = await b.keyPackage();
  const alice0 = await createGroup(
    new Uint8Array(16).fill(3),
    akp.publicPackage,
    akp.privatePackage,
    [],
    cs,
    profileClientConfig(),
  );
  const added = await createCommit(
    { state: alice0, cipherSuite: cs },
    {
      extraProposals: [{ proposalType: "add", add: { keyPackage: bkp.publicPackage } }],
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
    },
  );
  const bob = await joinGroup(
    added.welcome!,
    bkp.publicPackage,
    bkp.privatePackage,
    emptyPskIndex,
    cs,
    undefined,
    undefined,
    profileClientConfig(),
  );
  return { alice: added.newState, bob };
}
