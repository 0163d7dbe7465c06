import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import {
  createCommit,
  createGroup,
  encodeMlsMessage,
  type ClientState,
  type Extension,
  type KeyPackage,
} from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import { processInboxItems } from "./groups/inbox.js";
import { replacesExtension } from "./groups/replacement.js";
import { decodeMessage } from "./mls/codec.js";
import { openWelcomeInfo } from "./mls/welcomeSigner.js";
import { REPLACES_EXTENSION_TYPE } from "@mastodon-mls/protocol";
import { aliceAndBobOnFake } from "./testSupport/fakeGroup.js";
import { FakeServices } from "./testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "./testSupport/localDevices.js";

// D21 (groups/replacement.ts), first written by a review of an earlier form of it: which claims that a
// group re-creates g alice believes. alice is an MlsDmClient in group g with bob@a.test (a ts-mls device);
// other groups' Welcomes are made with ts-mls and handed to her inbox processing as a hub would.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let g: string;
let bobState: ClientState;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob: bobState, groupId: g } = await aliceAndBobOnFake(fake, "d21"));
  await alice.sync();
});
afterEach(() => fake.stop());

const ctxOf = (c: MlsDmClient) => (c as unknown as { ctx: DeviceContext }).ctx;

/** alice's last-resort KeyPackage, as anyone who claims one gets it. */
async function aliceKeyPackage(): Promise<KeyPackage> {
  const ctx = ctxOf(alice);
  const rec = await ctx.store.readKeyPackage(ctx.device.lastResort.ref);
  const msg = decodeMessage(fromBase64url(rec!.keyPackage));
  if (msg.wireformat !== "mls_key_package") throw new Error("no KeyPackage");
  return msg.keyPackage;
}

/** A group made by `device` (ts-mls) that adds alice, its Welcome naming `replaces`; joined by alice. */
async function joinGroupOf(
  device: LocalDevice,
  replaces?: string,
  extensions?: Extension[],
): Promise<string> {
  const cs = await cipherSuite();
  const kp = await device.keyPackage();
  const idBytes = crypto.getRandomValues(new Uint8Array(16));
  const state = await createGroup(
    idBytes,
    kp.publicPackage,
    kp.privatePackage,
    [],
    cs,
    profileClientConfig(),
  );
  const added = await createCommit(
    { state, cipherSuite: cs },
    {
      extraProposals: [{ proposalType: "add", add: { keyPackage: await aliceKeyPackage() } }],
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
      ...(replaces === undefined ? {} : { groupInfoExtensions: [replacesExtension(replaces)] }),
      ...(extensions === undefined ? {} : { groupInfoExtensions: extensions }),
    },
  );
  const welcome = encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: added.welcome! });
  const id = toBase64url(idBytes);
  await processInboxItems(
    ctxOf(alice),
    fake.url,
    [{ kind: "welcome", group_id: id, seq: 0, welcome: toBase64url(welcome), cursor: "x" }],
    "x",
  );
  expect(linkOf(id)?.status).toBe("active"); // joined, as any group that adds her is
  return id;
}

const linkOf = (id: string) => alice.groups().find((x) => x.groupId === id);

describe("D21: a Welcome naming the group it re-creates", () => {
  it("signed by a member's device of that group: linked both ways", async () => {
    const n = await joinGroupOf(bobDevice, g);
    expect(linkOf(n)?.replaces).toBe(g);
    expect(linkOf(g)?.replacedBy).toBe(n);
    // The first link stays: bob's second claim changes nothing in g.
    const later = await joinGroupOf(bobDevice, g);
    expect(linkOf(later)?.replaces).toBe(g);
    expect(linkOf(g)?.replacedBy).toBe(n);
  });

  it("signed by a device with a certificate in a member's name under another account key: no link", async () => {
    // A certificate for acct:bob@a.test under an account key mallory made passes the offline check, as
    // every self-issued certificate does; the device is not the one that was in g.
    const mallory = await localDevice("acct:bob@a.test");
    expect(mallory.deviceId).not.toBe(bobDevice.deviceId);
    const m = await joinGroupOf(mallory, g);
    expect(linkOf(m)?.replaces).toBeUndefined();
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });

  it("signed by the sender of the commit that forked the group: no link", async () => {
    const old = ctxOf(alice).group(g);
    old.record.forks = [
      {
        epoch: 1,
        commitHash: "h",
        commitSeq: 2,
        sender: bobDevice.deviceId,
        senderAcct: "bob@a.test",
        reporter: ctxOf(alice).deviceId,
        reporterAcct: "alice@a.test",
        reason: "processing_failed",
        stuck: false,
      },
    ];
    const n = await joinGroupOf(bobDevice, g);
    expect(linkOf(n)?.replaces).toBeUndefined();
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });

  it("a Welcome that names nothing, or a group alice does not know, links nothing", async () => {
    const n = await joinGroupOf(bobDevice);
    expect(linkOf(n)?.replaces).toBeUndefined();
    const unknown = await joinGroupOf(bobDevice, toBase64url(new Uint8Array(16).fill(7)));
    expect(linkOf(unknown)?.replaces).toBeUndefined();
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });
});

// ---- forks (a review of the first form of this) ----

/** `device` (a ts-mls device of `acct`) added to g by alice, as any member may add another's devices. */
async function addToG(device: LocalDevice, acct: string): Promise<void> {
  const kp = await device.keyPackage();
  fake.keyPackages.set(acct, { deviceId: device.deviceId, keyPackage: kp.encoded });
  await alice.addMembers(g, [acct], { allowUnverified: true });
  expect(Object.values(ctxOf(alice).group(g).record.leaves).map((l) => l.deviceId)).toContain(
    device.deviceId,
  );
}

/** The hub's `forked` notice for g naming `sender` (a device id) as the sender of the rejected commit. */
async function forkNotice(sender: string): Promise<void> {
  await processInboxItems(
    ctxOf(alice),
    fake.url,
    [
      {
        kind: "forked",
        group_id: g,
        seq: 50,
        epoch: 1,
        commit_hash: "h".repeat(43),
        commit_seq: 49,
        sender,
        reporter: ctxOf(alice).deviceId,
        reason: "processing_failed",
        cursor: "y",
      },
    ],
    "y",
  );
  expect(ctxOf(alice).group(g).record.forks?.[0]?.sender).toBe(sender);
}

describe("D21 and forks, from a review: who forked the group never links it", () => {
  it("another device of the fork sender's account: no link (recreateGroup leaves that account out)", async () => {
    const bob2 = await localDevice("acct:bob@a.test");
    await addToG(bob2, "bob@a.test");
    await forkNotice(bobDevice.deviceId);
    // recreatePlan excludes the sender's account, all its devices; the link check only its one device.
    const n = await joinGroupOf(bob2, g);
    expect(linkOf(n)?.replaces).toBeUndefined();
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });

  it("a link made by the fork sender before the fork was known does not outlive the fork notice", async () => {
    const carol = await localDevice("acct:carol@a.test");
    await addToG(carol, "carol@a.test");
    // bob makes his "re-creation" first, then the commit that forks g.
    const n = await joinGroupOf(bobDevice, g);
    expect(linkOf(g)?.replacedBy).toBe(n);
    await forkNotice(bobDevice.deviceId);
    // carol re-creates g without bob, as the advice says: alice joins it.
    const m = await joinGroupOf(carol, g);
    expect(linkOf(m)?.replaces).toBe(g);
    // g must not keep pointing at the fork sender's group, nor that group claim to continue g.
    expect(linkOf(g)?.replacedBy).toBe(m);
    expect(linkOf(n)?.replaces).toBeUndefined();
  });

  it("a device re-added to g after the fork (its advice) still knows who forked g", async () => {
    await forkNotice(bobDevice.deviceId);
    // A member (here bob's state, epoch 1) gives alice a fresh start: Remove her leaf, Add her again, in one
    // commit; the hub sends `removed` then the Welcome at that commit's seq (D20).
    const cs = await cipherSuite();
    const readd = await createCommit(
      { state: bobState, cipherSuite: cs },
      {
        extraProposals: [
          { proposalType: "remove", remove: { removed: 0 } },
          { proposalType: "add", add: { keyPackage: await aliceKeyPackage() } },
        ],
        wireAsPublicMessage: true,
        ratchetTreeExtension: true,
      },
    );
    const welcome = encodeMlsMessage({
      version: "mls10",
      wireformat: "mls_welcome",
      welcome: readd.welcome!,
    });
    await processInboxItems(
      ctxOf(alice),
      fake.url,
      [
        { kind: "removed", group_id: g, seq: 100, cursor: "r1" },
        { kind: "welcome", group_id: g, seq: 100, welcome: toBase64url(welcome), cursor: "r2" },
      ],
      "r2",
    );
    expect(linkOf(g)?.status).toBe("active");
    // bob, who forked g, now names his own group as g's replacement.
    const n = await joinGroupOf(bobDevice, g);
    expect(linkOf(n)?.replaces).toBeUndefined();
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });

  it("a malformed claim (empty, 65 bytes, repeated, not a known group) joins and links nothing", async () => {
    const raw = fromBase64url(g);
    const ext = (data: Uint8Array): Extension => ({ extensionType: 0xf0a2, extensionData: data });
    for (const exts of [
      [ext(new Uint8Array(0))],
      [ext(new Uint8Array(65).fill(1))],
      [ext(new Uint8Array([...raw, 0]))],
      [ext(new Uint8Array(4096).fill(9)), ext(raw)],
    ]) {
      const n = await joinGroupOf(bobDevice, undefined, exts);
      expect(linkOf(n)?.replaces).toBeUndefined();
    }
    expect(linkOf(g)?.replacedBy).toBeUndefined();
  });

  it("a member that linked the fork sender's group before the fork passes the claim on after it", async () => {
    const n = await joinGroupOf(bobDevice, g);
    await forkNotice(bobDevice.deviceId);
    // alice, now told bob forked g, adds dave to bob's group n: her Welcome still names g, and any other
    // member of g checks only that alice (a good member of g) signed it.
    (fake as unknown as { groups: Map<string, unknown> }).groups.set(n, {
      epoch: 1,
      seq: 0,
      winners: new Map(),
    });
    const dave = await localDevice("acct:dave@a.test");
    const kp = await dave.keyPackage();
    fake.keyPackages.set("dave@a.test", { deviceId: dave.deviceId, keyPackage: kp.encoded });
    await alice.addMembers(n, ["dave@a.test"], { allowUnverified: true });
    const msg = decodeMessage(fake.lastWelcome!);
    if (msg.wireformat !== "mls_welcome") throw new Error("no Welcome");
    const info = await openWelcomeInfo(
      msg.welcome,
      kp.publicPackage,
      kp.privatePackage.initPrivateKey,
      await cipherSuite(),
    );
    const claim = info?.extensions.find((e) => e.extensionType === REPLACES_EXTENSION_TYPE);
    expect(claim === undefined ? undefined : toBase64url(claim.extensionData)).toBeUndefined();
  });
});
