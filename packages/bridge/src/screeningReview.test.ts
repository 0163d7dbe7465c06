import { beforeAll, describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import {
  createCommit,
  createGroup,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  type CiphersuiteImpl,
  type ClientState,
  type KeyPackage,
  type LeafNode,
} from "ts-mls";
import { signKeyPackage } from "ts-mls/keyPackage.js";
import { signLeafNodeKeyPackage } from "ts-mls/leafNode.js";
import { cipherSuite, generateSigningKeyPair, type SigningKeyPair } from "./crypto.js";
import {
  decodeDeviceCertificate,
  signDeviceCertificate,
  verifyDeviceCertificate,
} from "./deviceCertificate.js";
import {
  decodeKeyPackageMessage,
  generateDeviceKeyPackage,
  verifyKeyPackage,
  type GeneratedKeyPackage,
} from "./keyPackage.js";
import { basicCredential, credentialIdentity, profileClientConfig } from "./mlsProfile.js";
import { decodeMlsMessageStrict, groupViewFromState, screenMessage } from "./screening.js";
import { TlsReader, TlsWriter } from "./tls.js";

// Findings of the security review of the foundation, each reproduced and refused. Crafted commits are only
// screened here, never processed: ts-mls 1.6.4 would accept several of them and then fail or exit later.

const NOW = Math.floor(Date.now() / 1000);

interface Device {
  identity: string;
  account: SigningKeyPair;
  sig: SigningKeyPair;
  certificate: Uint8Array;
  kp: GeneratedKeyPackage;
}

async function device(acct: string, lifetimeSeconds?: number): Promise<Device> {
  const identity = `acct:${acct}`;
  const account = await generateSigningKeyPair();
  const sig = await generateSigningKeyPair();
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: sig.publicKey,
      notBefore: NOW - 60,
      notAfter: NOW + 86400,
    },
    account.signKey,
  );
  const kp = await generateDeviceKeyPackage({
    identity,
    signatureKeyPair: sig,
    certificate,
    lifetimeSeconds,
  });
  return { identity, account, sig, certificate, kp };
}

/** Re-signs a KeyPackage after changing its leaf: what any holder of the device key can do. */
async function resign(d: Device, change: (leaf: LeafNode) => LeafNode): Promise<KeyPackage> {
  const cs = await cipherSuite();
  const { signature: _leafSig, ...leafTbs } = change(d.kp.publicPackage.leafNode) as LeafNode & {
    leafNodeSource: "key_package";
    lifetime: { notBefore: bigint; notAfter: bigint };
  };
  const leaf = await signLeafNodeKeyPackage(leafTbs, d.sig.signKey, cs.signature);
  const { signature: _kpSig, ...kpTbs } = d.kp.publicPackage;
  return signKeyPackage({ ...kpTbs, leafNode: leaf }, d.sig.signKey, cs.signature);
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return `${e.code} ${e.message}`;
    throw e;
  }
}

let alice: Device;
let mallory: Device;
/** alice's state (leaf 0) and mallory's (leaf 1) after alice added mallory. */
let state: ClientState;
let malloryState: ClientState;

beforeAll(async () => {
  const cs = await cipherSuite();
  [alice, mallory] = await Promise.all([device("alice@a.example"), device("mallory@b.example")]);
  state = await createGroup(
    new TextEncoder().encode("review-group"),
    alice.kp.publicPackage,
    alice.kp.privatePackage,
    [],
    cs,
    profileClientConfig(),
  );
  const added = await createCommit(
    { state, cipherSuite: cs },
    {
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
      extraProposals: [{ proposalType: "add", add: { keyPackage: mallory.kp.publicPackage } }],
    },
  );
  state = added.newState;
  malloryState = await joinGroup(
    added.welcome!,
    mallory.kp.publicPackage,
    mallory.kp.privatePackage,
    emptyPskIndex,
    cs,
    undefined,
    undefined,
    profileClientConfig(),
  );
});

const addCommit = async (...kps: KeyPackage[]) =>
  (
    await createCommit(
      { state, cipherSuite: await cipherSuite() },
      {
        wireAsPublicMessage: true,
        extraProposals: kps.map((keyPackage) => ({ proposalType: "add" as const, add: { keyPackage } })),
      },
    )
  ).commit;

describe("review finding C1: KeyPackages that poison a group", () => {
  it("SCR-16: an Add reusing an encryption key of the tree is refused", async () => {
    const evil = await device("eve@b.example");
    const aliceLeafKey = (state.ratchetTree[0] as { leaf: LeafNode }).leaf.hpkePublicKey;
    const kp = await resign(evil, (leaf) => ({ ...leaf, hpkePublicKey: aliceLeafKey }));
    // The KeyPackage on its own is well formed: only the tree shows the reuse.
    await expect(
      code(verifyKeyPackage({ keyPackage: kp, encoded: new Uint8Array(), __in: "unverified" })),
    ).resolves.toBe("ok");
    expect(await code(screenMessage(await addCommit(kp), groupViewFromState(state)))).toMatch(
      /^screening_failed SCR-16/,
    );
  });

  it("SCR-16: two Adds sharing a key in one commit are refused", async () => {
    const [x, y] = await Promise.all([device("x@b.example"), device("y@b.example")]);
    const shared = x.kp.publicPackage.leafNode.hpkePublicKey;
    const kp = await resign(y, (leaf) => ({ ...leaf, hpkePublicKey: shared }));
    const commit = await addCommit(x.kp.publicPackage, kp);
    expect(await code(screenMessage(commit, groupViewFromState(state)))).toMatch(/^screening_failed SCR-16/);
  });

  it("KP-9: a leaf whose capabilities omit basic credentials is refused", async () => {
    const evil = await device("eve2@b.example");
    const kp = await resign(evil, (leaf) => ({
      ...leaf,
      capabilities: { ...leaf.capabilities, credentials: ["x509"] },
    }));
    const bytes = encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: kp });
    expect(await code(verifyKeyPackage(decodeKeyPackageMessage(bytes)))).toMatch(
      /^invalid_key_package .*capabilities/,
    );
  });
});

describe("review finding C2: a member taking another account's name", () => {
  it("SCR-15: an update path that changes the committer's credential is refused, by the hub and by members", async () => {
    const cs = await cipherSuite();
    // mallory keeps her device key but names alice, with a certificate signed by a fresh key of her own.
    const fakeAccount = await generateSigningKeyPair();
    const fakeCert = await signDeviceCertificate(
      {
        identity: alice.identity,
        accountKey: fakeAccount.publicKey,
        sigKey: mallory.sig.publicKey,
        notBefore: NOW - 60,
        notAfter: NOW + 86400,
      },
      fakeAccount.signKey,
    );
    const own = (malloryState.ratchetTree[2] as { leaf: LeafNode }).leaf;
    const tree = malloryState.ratchetTree.slice();
    tree[2] = {
      nodeType: "leaf",
      leaf: {
        ...own,
        credential: basicCredential(alice.identity),
        extensions: [{ extensionType: 0xf0a1, extensionData: fakeCert }],
      },
    };
    const crafted = (
      await createCommit(
        { state: { ...malloryState, ratchetTree: tree }, cipherSuite: cs },
        { wireAsPublicMessage: true },
      )
    ).commit;
    const msg = decodeMlsMessageStrict(encodeMlsMessage(crafted));
    // The forged certificate itself verifies offline: only the leaf's history shows the change.
    const aliceView = groupViewFromState(state);
    expect(aliceView.identityAt!(1)).toBe(mallory.identity);
    expect(await code(screenMessage(msg, aliceView))).toMatch(
      /^screening_failed SCR-15: the update path changes the leaf's credential/,
    );
    const hubView = {
      ...aliceView,
      senderLeaf: 1,
      identityAt: (leaf: number) => (leaf === 1 ? mallory.identity : alice.identity),
      treeKeys: undefined,
    };
    expect(await code(screenMessage(msg, hubView))).toMatch(/^screening_failed SCR-15/);
    // mallory's honest self-update still passes.
    const honest = (
      await createCommit({ state: malloryState, cipherSuite: cs }, { wireAsPublicMessage: true })
    ).commit;
    expect(await code(screenMessage(honest, aliceView))).toBe("ok");
  });
});

describe("audit: a member's own leaf shutting the group to newcomers", () => {
  it("SCR-17: an update path or an Update whose leaf omits basic credentials (or our ciphersuite) is refused", async () => {
    const cs = await cipherSuite();
    // ts-mls builds the path's leaf from the committer's current one: mallory edits hers in her own state.
    const tree = malloryState.ratchetTree.slice();
    const own = (tree[2] as { leaf: LeafNode }).leaf;
    tree[2] = {
      nodeType: "leaf",
      leaf: { ...own, capabilities: { ...own.capabilities, credentials: ["x509"] } },
    };
    const crafted = (
      await createCommit(
        { state: { ...malloryState, ratchetTree: tree }, cipherSuite: cs },
        { wireAsPublicMessage: true },
      )
    ).commit;
    const msg = decodeMlsMessageStrict(encodeMlsMessage(crafted));
    const aliceView = groupViewFromState(state);
    expect(await code(screenMessage(msg, aliceView))).toMatch(
      /^screening_failed SCR-17: the update path's leaf does not list/,
    );
    // The hub, which knows no tree, refuses it too.
    const hubView = {
      ...aliceView,
      senderLeaf: 1,
      deviceAt: undefined,
      identityAt: undefined,
      treeKeys: undefined,
    };
    expect(await code(screenMessage(msg, hubView))).toMatch(/^screening_failed SCR-17/);

    // The same leaf sent as an Update proposal; and a leaf without our ciphersuite.
    if (msg.wireformat !== "mls_public_message" || msg.publicMessage.content.contentType !== "commit") {
      throw new Error("not a commit");
    }
    const leafNode = msg.publicMessage.content.commit.path!.leafNode;
    const asUpdate = (leaf: LeafNode) =>
      ({
        ...msg,
        publicMessage: {
          ...msg.publicMessage,
          content: {
            ...msg.publicMessage.content,
            contentType: "proposal",
            proposal: { proposalType: "update", update: { leafNode: leaf } },
          },
        },
      }) as typeof msg;
    expect(await code(screenMessage(asUpdate(leafNode), aliceView))).toMatch(
      /^screening_failed SCR-17: an Update's leaf/,
    );
    const noSuite = {
      ...leafNode,
      capabilities: { ...leafNode.capabilities, credentials: ["basic" as const], ciphersuites: [] },
    };
    expect(await code(screenMessage(asUpdate(noSuite), aliceView))).toMatch(/^screening_failed SCR-17/);
  });
});

describe("audit: a member's own keys repeating a key of the tree", () => {
  /** ts-mls's ciphersuite, exporting `key` in place of every path node's own key (`leaf`: the leaf's). */
  async function handingOut(key: Uint8Array, which: "leaf" | "nodes"): Promise<CiphersuiteImpl> {
    const real = await cipherSuite();
    let leafKey: unknown; // the first key pair derived for a path is its leaf's
    return {
      ...real,
      hpke: {
        ...real.hpke,
        deriveKeyPair: async (ikm) => {
          const pair = await real.hpke.deriveKeyPair(ikm);
          leafKey ??= pair.publicKey;
          return pair;
        },
        exportPublicKey: async (k) =>
          (k === leafKey) === (which === "leaf") ? key : real.hpke.exportPublicKey(k),
      },
    };
  }

  it("SCR-18: an update path whose leaf or node brings a key of the tree, or an Update whose leaf does, is refused", async () => {
    const aliceKey = (state.ratchetTree[0] as { leaf: LeafNode }).leaf.hpkePublicKey;
    const view = groupViewFromState(state);
    for (const which of ["leaf", "nodes"] as const) {
      const cs = await handingOut(aliceKey, which);
      const crafted = (
        await createCommit({ state: malloryState, cipherSuite: cs }, { wireAsPublicMessage: true })
      ).commit;
      expect(await code(screenMessage(crafted, view))).toMatch(
        /^screening_failed SCR-18: the commit brings an encryption key already in the group/,
      );
    }
    const honest = (
      await createCommit(
        { state: malloryState, cipherSuite: await cipherSuite() },
        { wireAsPublicMessage: true },
      )
    ).commit;
    expect(await code(screenMessage(honest, view))).toBe("ok");
    if (honest.wireformat !== "mls_public_message" || honest.publicMessage.content.contentType !== "commit") {
      throw new Error("not a commit");
    }
    const leafNode = { ...honest.publicMessage.content.commit.path!.leafNode, hpkePublicKey: aliceKey };
    const update = {
      ...honest,
      publicMessage: {
        ...honest.publicMessage,
        content: {
          ...honest.publicMessage.content,
          contentType: "proposal",
          proposal: { proposalType: "update", update: { leafNode } },
        },
      },
    } as unknown as typeof honest;
    expect(await code(screenMessage(update, view))).toMatch(/^screening_failed SCR-18: an Update brings/);
  });
});

describe("review finding C4: time passing must not break a valid commit", () => {
  it("a member processing an Add after its KeyPackage expired still accepts it with checkTimes off", async () => {
    const late = await device("late@b.example", 3600);
    const commit = await addCommit(late.kp.publicPackage);
    const view = groupViewFromState(state);
    const later = NOW + 2 * 3600;
    expect(await code(screenMessage(commit, view, { now: later }))).toMatch(/SCR-13/);
    expect(await code(screenMessage(commit, view, { now: later, checkTimes: false }))).toBe("ok");
  });
});

describe("review finding C8: a byte-order mark is not the same identity", () => {
  it("refuses a credential or certificate acct with a leading U+FEFF", async () => {
    const withBom = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode("acct:alice@a.example")]);
    expect(credentialIdentity({ credentialType: "basic", identity: withBom })).toBeUndefined();
    const decoded = new TlsReader(new TlsWriter().opaque(withBom).finish()).string(64);
    expect(decoded.startsWith("\uFEFF")).toBe(true);
    const account = await generateSigningKeyPair();
    const cert = await signDeviceCertificate(
      {
        identity: "\uFEFFacct:alice@a.example",
        accountKey: account.publicKey,
        sigKey: alice.sig.publicKey,
        notBefore: NOW - 60,
        notAfter: NOW + 600,
      },
      account.signKey,
    );
    expect(await code(verifyDeviceCertificate(decodeDeviceCertificate(cert)))).toMatch(
      /^invalid_certificate .*canonical/,
    );
  });
});
