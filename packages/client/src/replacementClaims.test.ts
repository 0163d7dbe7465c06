import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { createCommit, createGroup, encodeMlsMessage, type KeyPackage } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import { processInboxItems } from "./groups/inbox.js";
import { replacesExtension } from "./groups/replacement.js";
import { decodeMessage } from "./mls/codec.js";
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

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, groupId: g } = await aliceAndBobOnFake(fake, "d21"));
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
async function joinGroupOf(device: LocalDevice, replaces?: string): Promise<string> {
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
