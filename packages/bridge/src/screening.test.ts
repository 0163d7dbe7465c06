import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { LIMITS, ProtocolError, toBase64url } from "@mastodon-mls/protocol";
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createGroup,
  createProposal,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  processMessage,
  type ClientState,
  type MLSMessage,
  type Proposal,
  type PublicMessage,
} from "ts-mls";
import { cipherSuite, generateSigningKeyPair } from "./crypto.js";
import { deviceIdText, signDeviceCertificate } from "./deviceCertificate.js";
import { generateDeviceKeyPackage, type GeneratedKeyPackage } from "./keyPackage.js";
import { profileClientConfig } from "./mlsProfile.js";
import {
  decodeMlsMessageStrict,
  groupViewFromState,
  screenMessage,
  screenMessageBytes,
  type GroupView,
  type ScreenedCommit,
} from "./screening.js";

// Every crafted message here is only ever screened: ts-mls must never process a commit with a Remove of
// a missing or blank leaf, since that aborts this very process (notes/ts-mls-facts.md).

const NOW = Math.floor(Date.now() / 1000);

interface Device {
  name: string;
  sig: { publicKey: Uint8Array; signKey: Uint8Array };
  certificate: Uint8Array;
  kp: GeneratedKeyPackage;
}

async function device(name: string): Promise<Device> {
  const account = await generateSigningKeyPair();
  const sig = await generateSigningKeyPair();
  const identity = `acct:${name}@a.test`;
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
  return {
    name,
    sig,
    certificate,
    kp: await generateDeviceKeyPackage({ identity, signatureKeyPair: sig, certificate }),
  };
}

async function freshKeyPackage(d: Device): Promise<GeneratedKeyPackage> {
  return generateDeviceKeyPackage({
    identity: `acct:${d.name}@a.test`,
    signatureKeyPair: d.sig,
    certificate: d.certificate,
  });
}

const addOf = (kp: GeneratedKeyPackage): Proposal => ({
  proposalType: "add",
  add: { keyPackage: kp.publicPackage },
});
const removeOf = (leaf: number): Proposal => ({ proposalType: "remove", remove: { removed: leaf } });

/** A copy of a PublicMessage MLSMessage with `mutate` applied to its content, re-encoded and decoded. */
function craft(msg: MLSMessage, mutate: (pm: PublicMessage) => void): MLSMessage {
  if (msg.wireformat !== "mls_public_message") throw new Error("not a PublicMessage");
  const copy = structuredClone(msg);
  mutate(copy.publicMessage);
  return decodeMlsMessageStrict(encodeMlsMessage(copy));
}

function commitOf(pm: PublicMessage) {
  if (pm.content.contentType !== "commit") throw new Error("not a commit");
  return pm.content.commit;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return `${e.code} ${e.message}`;
    throw e;
  }
}

let alice: Device, bob: Device, carol: Device, dave: Device;
/** alice (leaf 0), bob (1), carol (2): a tree of width 4 whose leaf 3 is blank. */
let sa: ClientState, sb: ClientState;
let view: GroupView;
/** alice removes bob (leaf 1) and adds dave: a commit with an Add, a Remove and a path. */
let removeAdd: MLSMessage;

beforeAll(async () => {
  const cs = await cipherSuite();
  [alice, bob, carol, dave] = (await Promise.all(["alice", "bob", "carol", "dave"].map(device))) as [
    Device,
    Device,
    Device,
    Device,
  ];
  sa = await createGroup(
    new TextEncoder().encode("screening-group"),
    alice.kp.publicPackage,
    alice.kp.privatePackage,
    [],
    cs,
    profileClientConfig(),
  );
  const added = await createCommit(
    { state: sa, cipherSuite: cs },
    {
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
      extraProposals: [addOf(bob.kp), addOf(carol.kp)],
    },
  );
  sa = added.newState;
  sb = await joinGroup(
    added.welcome!,
    bob.kp.publicPackage,
    bob.kp.privatePackage,
    emptyPskIndex,
    cs,
    undefined,
    undefined,
    profileClientConfig(),
  );
  view = { ...groupViewFromState(sa), senderLeaf: 0 };
  removeAdd = (
    await createCommit(
      { state: sa, cipherSuite: cs },
      {
        wireAsPublicMessage: true,
        ratchetTreeExtension: true,
        extraProposals: [removeOf(1), addOf(dave.kp)],
      },
    )
  ).commit;
});

describe("screening accepts what our clients send", () => {
  it("describes a commit: adds verified, removes, path", async () => {
    const s = (await screenMessage(removeAdd, view)) as ScreenedCommit;
    expect(s.kind).toBe("commit");
    expect(s.senderLeaf).toBe(0);
    expect(s.removes).toEqual([1]);
    expect(s.adds.map((a) => a.acct)).toEqual(["dave@a.test"]);
    expect(s.adds[0]!.ref).toBe(dave.kp.ref);
    expect(s.hasPath).toBe(true);
  });

  it("builds a view from a member's state", () => {
    expect(view.leafCount).toBe(4);
    expect([0, 1, 2, 3].map((l) => view.isBlank(l))).toEqual([false, false, false, true]);
    expect(view.deviceAt!(1)).toBe(deviceIdText(bob.sig.publicKey));
    expect(view.deviceAt!(3)).toBeUndefined();
    expect(view.epoch).toBe(1n);
  });

  it("accepts application messages within the epoch window only", async () => {
    const cs = await cipherSuite();
    const app = await createApplicationMessage(sb, new TextEncoder().encode("hi"), cs);
    const msg: MLSMessage = {
      version: "mls10",
      wireformat: "mls_private_message",
      privateMessage: app.privateMessage,
    };
    await expect(screenMessage(msg, { ...view, senderLeaf: undefined })).resolves.toEqual({
      kind: "application",
      epoch: 1n,
    });
    await expect(screenMessage(msg, { ...view, epoch: 3n })).resolves.toMatchObject({ kind: "application" });
    expect(await codeOf(screenMessage(msg, { ...view, epoch: 4n }))).toMatch(/^stale_epoch SCR-7/);
    expect(await codeOf(screenMessage(msg, { ...view, epoch: 4n }, { applicationEpochWindow: 3 }))).toBe(
      "ok",
    );
    expect(await codeOf(screenMessage(msg, { ...view, epoch: 0n }))).toMatch(/^wrong_epoch SCR-7/);
  });

  it("resolves proposals by reference and reports referenced Removes", async () => {
    const cs = await cipherSuite();
    // bob proposes carol's removal; alice holds it and commits it by reference.
    const proposal = await createProposal(sb, true, removeOf(2), cs);
    const screened = await screenMessage(proposal.message, { ...groupViewFromState(sb), senderLeaf: 1 });
    expect(screened).toMatchObject({ kind: "proposal", senderLeaf: 1 });
    const processed = await processMessage(proposal.message as never, sa, emptyPskIndex, acceptAll, cs);
    const holder = processed.newState;
    const hubView = groupViewFromState(holder);
    expect([...hubView.acceptedProposals!.keys()]).toEqual([(screened as { ref: string }).ref]);
    const commit = await createCommit({ state: holder, cipherSuite: cs }, { wireAsPublicMessage: true });
    const s = (await screenMessage(commit.commit, { ...hubView, senderLeaf: 0 })) as ScreenedCommit;
    expect(s.removes).toEqual([2]);
    expect(s.proposalRefs).toEqual([(screened as { ref: string }).ref]);
    // Without the proposal in the view, the reference does not resolve.
    expect(await codeOf(screenMessage(commit.commit, { ...hubView, acceptedProposals: new Map() }))).toMatch(
      /SCR-10/,
    );
    // Referenced twice.
    const twice = craft(commit.commit, (pm) => {
      const c = commitOf(pm);
      c.proposals = [...c.proposals, ...c.proposals];
    });
    expect(await codeOf(screenMessage(twice, hubView))).toMatch(/SCR-10/);
  });
});

describe("screening refuses", () => {
  it("SCR-1: non-group wire formats, trailing bytes, truncation, garbage, oversize", async () => {
    const kpMessage = decodeMlsMessageStrict(dave.kp.encoded);
    expect(await codeOf(screenMessage(kpMessage, view))).toMatch(/^screening_failed SCR-1/);
    const bytes = encodeMlsMessage(removeAdd);
    expect(() => decodeMlsMessageStrict(Uint8Array.from([...bytes, 0]))).toThrow(/trailing/);
    for (const bad of [
      bytes.subarray(0, bytes.byteLength - 1),
      bytes.subarray(0, 9),
      new Uint8Array(0),
      new Uint8Array(40).fill(0xff),
    ]) {
      expect(await codeOf(screenMessageBytes(bad, view))).toMatch(/^invalid_mls_message/);
    }
    expect(await codeOf(screenMessageBytes(bytes, view))).toBe("ok");
    expect(() => decodeMlsMessageStrict(bytes, 100)).toThrow(/too large/);
  });

  it("SCR-2: a message for another group", async () => {
    expect(
      await codeOf(screenMessage(removeAdd, { ...view, groupId: new TextEncoder().encode("other") })),
    ).toMatch(/SCR-2/);
  });

  it("SCR-3: a commit sent as a PrivateMessage", async () => {
    const cs = await cipherSuite();
    const hidden = await createCommit(
      { state: sa, cipherSuite: cs },
      { wireAsPublicMessage: false, extraProposals: [removeOf(1)] },
    );
    expect(hidden.commit.wireformat).toBe("mls_private_message");
    expect(await codeOf(screenMessage(hidden.commit, view))).toMatch(/SCR-3/);
  });

  it("SCR-4: application data in a PublicMessage", async () => {
    const msg = craft(removeAdd, (pm) => {
      Object.assign(pm.content, { contentType: "application", applicationData: new Uint8Array(8) });
      delete (pm.content as { commit?: unknown }).commit;
      pm.auth = { contentType: "application", signature: pm.auth.signature };
    });
    expect(await codeOf(screenMessage(msg, view))).toMatch(/SCR-4/);
  });

  it("SCR-5: external and new-member senders", async () => {
    const external = craft(removeAdd, (pm) => {
      pm.content.sender = { senderType: "external", senderIndex: 0 };
      Object.assign(pm, { senderType: "external" });
      delete (pm as { membershipTag?: unknown }).membershipTag;
    });
    expect(await codeOf(screenMessage(external, view))).toMatch(/SCR-5/);
    const newMember = craft(removeAdd, (pm) => {
      pm.content.sender = { senderType: "new_member_commit" };
      Object.assign(pm, { senderType: "new_member_commit" });
      delete (pm as { membershipTag?: unknown }).membershipTag;
    });
    expect(await codeOf(screenMessage(newMember, view))).toMatch(/SCR-5/);
  });

  it("SCR-6: a spoofed or non-member sender leaf", async () => {
    expect(await codeOf(screenMessage(removeAdd, { ...view, senderLeaf: 2 }))).toMatch(/SCR-6/);
    for (const leaf of [3, 9, 2 ** 31]) {
      const spoofed = craft(removeAdd, (pm) => {
        pm.content.sender = { senderType: "member", leafIndex: leaf };
      });
      expect(await codeOf(screenMessage(spoofed, { ...view, senderLeaf: undefined }))).toMatch(/SCR-6/);
    }
  });

  it("SCR-7: a commit or proposal for another epoch", async () => {
    expect(await codeOf(screenMessage(removeAdd, { ...view, epoch: 2n }))).toMatch(/^wrong_epoch SCR-7/);
    expect(await codeOf(screenMessage(removeAdd, { ...view, epoch: 0n }))).toMatch(/^wrong_epoch SCR-7/);
  });

  it("SCR-8: PSK, ReInit, ExternalInit, GroupContextExtensions and custom proposals", async () => {
    const forbidden: Proposal[] = [
      { proposalType: "group_context_extensions", groupContextExtensions: { extensions: [] } },
      { proposalType: "external_init", externalInit: { kemOutput: new Uint8Array(32) } },
      {
        proposalType: "reinit",
        reinit: {
          groupId: new Uint8Array(4),
          version: "mls10",
          cipherSuite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
          extensions: [],
        },
      },
      {
        proposalType: "psk",
        psk: {
          preSharedKeyId: { psktype: "external", pskId: new Uint8Array(4), pskNonce: new Uint8Array(32) },
        },
      },
      { proposalType: 0xf0f0, proposalData: new Uint8Array(3) },
    ];
    for (const proposal of forbidden) {
      const msg = craft(removeAdd, (pm) => {
        commitOf(pm).proposals.push({ proposalOrRefType: "proposal", proposal });
      });
      expect(await codeOf(screenMessage(msg, view))).toMatch(/SCR-8/);
    }
    // The same as a standalone proposal message.
    const cs = await cipherSuite();
    const standalone = await createProposal(sb, true, removeOf(2), cs);
    const gce = craft(standalone.message, (pm) => {
      Object.assign(pm.content, { proposal: forbidden[0] });
    });
    expect(await codeOf(screenMessage(gce, { ...view, senderLeaf: 1 }))).toMatch(/SCR-8/);
  });

  it("SCR-9: a Remove of a leaf beyond the tree or of a blank leaf (the ts-mls crash), duplicates, self-removal", async () => {
    const withRemoves = (...leaves: number[]) =>
      craft(removeAdd, (pm) => {
        commitOf(pm).proposals = leaves.map((l) => ({
          proposalOrRefType: "proposal" as const,
          proposal: removeOf(l),
        }));
      });
    for (const leaf of [3, 4, 7, 1000, 2 ** 32 - 1]) {
      expect(await codeOf(screenMessage(withRemoves(leaf), view))).toMatch(/SCR-9.*not a member/);
    }
    expect(await codeOf(screenMessage(withRemoves(1, 1), view))).toMatch(/SCR-9.*twice/);
    expect(await codeOf(screenMessage(withRemoves(0), view))).toMatch(/SCR-9.*own sender/);
    expect(await codeOf(screenMessage(withRemoves(1, 2), view))).toBe("ok");
    // A Remove proposal message for a blank leaf is refused too, so no commit can reference it.
    const cs = await cipherSuite();
    const proposal = await createProposal(sb, true, removeOf(2), cs);
    const blank = craft(proposal.message, (pm) => {
      Object.assign(pm.content, { proposal: removeOf(3) });
    });
    expect(await codeOf(screenMessage(blank, { ...view, senderLeaf: 1 }))).toMatch(/SCR-9/);
  });

  it("SCR-11: Updates by value, the committer's own, or changing the signature key", async () => {
    // carol's leaf with a new encryption key, as an Update brings (the tree's own would be SCR-18).
    const leafNode = {
      ...carol.kp.publicPackage.leafNode,
      leafNodeSource: "update",
      hpkePublicKey: new Uint8Array(32).fill(9),
    } as never;
    const update: Proposal = { proposalType: "update", update: { leafNode } };
    const byValue = craft(removeAdd, (pm) => {
      commitOf(pm).proposals.push({ proposalOrRefType: "proposal", proposal: update });
    });
    expect(await codeOf(screenMessage(byValue, view))).toMatch(/SCR-11.*by reference/);
    const ref = new Uint8Array(32).fill(7);
    const byRef = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [{ proposalOrRefType: "reference", reference: ref }];
    });
    const withAccepted = (senderLeaf: number): GroupView => ({
      ...view,
      acceptedProposals: new Map([[toBase64url(ref), { proposal: update, senderLeaf }]]),
    });
    expect(await codeOf(screenMessage(byRef, withAccepted(2)))).toBe("ok");
    expect(await codeOf(screenMessage(byRef, withAccepted(0)))).toMatch(/SCR-11.*own Update/);
    expect(await codeOf(screenMessage(byRef, withAccepted(1)))).toMatch(/SCR-11.*signature key/);
  });

  it("SCR-12: a Remove without an update path, and an empty commit without one", async () => {
    const noPath = craft(removeAdd, (pm) => {
      commitOf(pm).path = undefined;
    });
    expect(await codeOf(screenMessage(noPath, view))).toMatch(/SCR-12/);
    const empty = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [];
      commitOf(pm).path = undefined;
    });
    expect(await codeOf(screenMessage(empty, view))).toMatch(/SCR-12/);
  });

  it("SCR-13: invalid KeyPackages, members added again, a device added twice", async () => {
    const tampered = craft(removeAdd, (pm) => {
      const add = commitOf(pm).proposals[1]!;
      if (add.proposalOrRefType === "proposal" && add.proposal.proposalType === "add") {
        add.proposal.add.keyPackage.extensions = [
          { extensionType: 0x000a, extensionData: new Uint8Array(0) },
        ];
      }
    });
    expect(await codeOf(screenMessage(tampered, view))).toMatch(/SCR-13/);
    const again = await freshKeyPackage(bob);
    const member = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [{ proposalOrRefType: "proposal", proposal: addOf(again) }];
    });
    expect(await codeOf(screenMessage(member, view))).toMatch(/SCR-13.*already a member/);
    // A commit that removes the device's leaf may add it again (a re-add), whatever the order of the list.
    const readd = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [
        { proposalOrRefType: "proposal", proposal: removeOf(1) },
        { proposalOrRefType: "proposal", proposal: addOf(again) },
      ];
    });
    const readded = (await screenMessage(readd, view)) as ScreenedCommit;
    expect(readded.removes).toEqual([1]);
    expect(readded.adds.map((a) => a.deviceId)).toEqual([deviceIdText(bob.sig.publicKey)]);
    const addFirst = craft(readd, (pm) => {
      commitOf(pm).proposals.reverse();
    });
    expect(await codeOf(screenMessage(addFirst, view))).toBe("ok");
    // Removing another leaf does not make room for it.
    const otherRemoved = craft(readd, (pm) => {
      commitOf(pm).proposals[0] = { proposalOrRefType: "proposal", proposal: removeOf(2) };
    });
    expect(await codeOf(screenMessage(otherRemoved, view))).toMatch(/SCR-13.*already a member/);
    const daveAgain = await freshKeyPackage(dave);
    const twice = craft(removeAdd, (pm) => {
      commitOf(pm).proposals.push({ proposalOrRefType: "proposal", proposal: addOf(daveAgain) });
    });
    expect(await codeOf(screenMessage(twice, view))).toMatch(/SCR-13.*twice/);
    expect(await codeOf(screenMessage(removeAdd, view, { now: NOW + 100 * 86400 }))).toMatch(/SCR-13/);
  });

  it("review D20: SCR-13 with a Remove by reference, and an Update of the re-added leaf", async () => {
    const again = await freshKeyPackage(bob);
    const ref = new Uint8Array(32).fill(9);
    const withRef = (proposal: Proposal, senderLeaf: number): GroupView => ({
      ...view,
      acceptedProposals: new Map([[toBase64url(ref), { proposal, senderLeaf }]]),
    });
    const readd = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [
        { proposalOrRefType: "proposal", proposal: addOf(again) },
        { proposalOrRefType: "reference", reference: ref },
      ];
    });
    // bob's own leave request (a Remove of his leaf, by him) committed with a fresh Add of his device.
    const screened = (await screenMessage(readd, withRef(removeOf(1), 1))) as ScreenedCommit;
    expect(screened.removes).toEqual([1]);
    // The reference is someone else's leaf: no room for bob.
    expect(await codeOf(screenMessage(readd, withRef(removeOf(2), 1)))).toMatch(/SCR-13.*already a member/);
    // An Update of bob's leaf does not remove it.
    const leafNode = { ...bob.kp.publicPackage.leafNode, leafNodeSource: "update" } as never;
    const update: Proposal = { proposalType: "update", update: { leafNode } };
    expect(await codeOf(screenMessage(readd, withRef(update, 1)))).toMatch(/SCR-13.*already a member/);
    // And the Remove with an Update of the same leaf is refused (SCR-9), whatever is added.
    const both = craft(readd, (pm) => {
      commitOf(pm).proposals.push({ proposalOrRefType: "proposal", proposal: removeOf(1) });
    });
    expect(await codeOf(screenMessage(both, withRef(update, 1)))).toMatch(/SCR-9/);
  });

  it("SCR-19: a proposal beyond the epoch's bound of held proposals", async () => {
    const cs = await cipherSuite();
    const proposal = await createProposal(sb, true, removeOf(2), cs);
    const held = (n: number): GroupView => ({
      ...groupViewFromState(sb),
      senderLeaf: 1,
      acceptedProposals: new Map(
        Array.from({ length: n }, (_, i) => [`ref${i}`, { proposal: removeOf(2), senderLeaf: 1 }]),
      ),
    });
    expect(await codeOf(screenMessage(proposal.message, held(3), { maxProposals: 4 }))).toBe("ok");
    expect(await codeOf(screenMessage(proposal.message, held(4), { maxProposals: 4 }))).toMatch(
      /^screening_failed SCR-19: 4 proposals are held/,
    );
    expect(await codeOf(screenMessage(proposal.message, held(LIMITS.proposalsPerEpoch)))).toMatch(/SCR-19/);
    expect(await codeOf(screenMessage(proposal.message, held(LIMITS.proposalsPerEpoch - 1)))).toBe("ok");
  });

  it("SCR-14: more members than allowed", async () => {
    expect(await codeOf(screenMessage(removeAdd, view, { maxMembers: 3 }))).toBe("ok");
    const addOnly = craft(removeAdd, (pm) => {
      commitOf(pm).proposals.shift();
    });
    expect(await codeOf(screenMessage(addOnly, view, { maxMembers: 3 }))).toMatch(/SCR-14/);
  });

  it("SCR-15: an update path that changes the committer's key", async () => {
    const msg = craft(removeAdd, (pm) => {
      commitOf(pm).path!.leafNode.signaturePublicKey = dave.sig.publicKey;
    });
    expect(await codeOf(screenMessage(msg, view))).toMatch(/SCR-15/);
  });

  it("SCR-15, SCR-11: an update path or an Update that keeps the key but names another account", async () => {
    // alice's own key with carol's name: a leaf would then read as carol's (its certificate says so too).
    const asCarol = {
      credentialType: "basic" as const,
      identity: new TextEncoder().encode("acct:carol@a.test"),
    };
    const path = craft(removeAdd, (pm) => {
      commitOf(pm).path!.leafNode.credential = asCarol;
    });
    expect(await codeOf(screenMessage(path, view))).toMatch(/SCR-15.*credential/);

    // carol's own Update (leaf 2, her key) naming bob, committed by reference by alice.
    const leafNode = {
      ...carol.kp.publicPackage.leafNode,
      leafNodeSource: "update",
      credential: { credentialType: "basic", identity: new TextEncoder().encode("acct:bob@a.test") },
    } as never;
    const update: Proposal = { proposalType: "update", update: { leafNode } };
    const ref = new Uint8Array(32).fill(9);
    const byRef = craft(removeAdd, (pm) => {
      commitOf(pm).proposals = [{ proposalOrRefType: "reference", reference: ref }];
    });
    const accepted: GroupView = {
      ...view,
      acceptedProposals: new Map([[toBase64url(ref), { proposal: update, senderLeaf: 2 }]]),
    };
    expect(await codeOf(screenMessage(byRef, accepted))).toMatch(/SCR-11.*credential/);
  });
});

describe("screening under random mutation", () => {
  it("answers every mutated commit with a ProtocolError or a result, never anything else", async () => {
    const bytes = encodeMlsMessage(removeAdd);
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
      fc.record({
        kind: fc.constant("set" as const),
        at: fc.nat(),
        value: fc.constantFrom(0, 1, 2, 3, 0x3f, 0x40, 0x7f, 0x80, 0xff),
      }),
      fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
      fc.record({
        kind: fc.constant("insert" as const),
        at: fc.nat(),
        value: fc.integer({ min: 0, max: 255 }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (mutations) => {
        let b = Uint8Array.from(bytes);
        for (const m of mutations) {
          const at = m.at % b.byteLength;
          if (m.kind === "flip") b[at] = b[at]! ^ m.xor;
          else if (m.kind === "set") b[at] = m.value;
          else if (m.kind === "cut") b = b.slice(0, at);
          else b = Uint8Array.from([...b.subarray(0, at), m.value, ...b.subarray(at)]);
        }
        try {
          await screenMessageBytes(b, view);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          expect(e.status).toBeGreaterThanOrEqual(400);
          expect(e.status).toBeLessThan(500);
        }
      }),
      { numRuns: 250 },
    );
  });
});
