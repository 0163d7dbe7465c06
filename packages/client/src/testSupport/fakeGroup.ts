import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { encodeCleartext } from "@mastodon-mls/protocol";
import {
  createApplicationMessage,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  type ClientState,
} from "ts-mls";
import { buildCreateNote } from "../cleartext.js";
import { MlsDmClient } from "../client.js";
import type { AddReport } from "../groups/changes.js";
import { decodeMessage } from "../mls/codec.js";
import type { RetryPolicy } from "../util/backoff.js";
import type { FakeServices } from "./fakeServices.js";
import { localDevice, type LocalDevice } from "./localDevices.js";

// Test support: alice, an MlsDmClient against a scripted hub and directory (FakeServices), and for the
// tests that decide what she receives, bob, driven with ts-mls directly, in a group of hers.

/** Three attempts, no waiting: the scripted hub answers at once. */
export const NO_WAIT: RetryPolicy = { attempts: 3, baseDelayMs: 0, maxDelayMs: 0 };

/** alice@a.test on `fake`, publishing no identity, in a fresh directory whose name has `name` in it. */
export async function aliceOnFake(
  fake: FakeServices,
  name: string,
  clock?: () => number,
): Promise<MlsDmClient> {
  return MlsDmClient.create({
    dir: join(await mkdtemp(join(tmpdir(), `mls-dm-${name}-`)), "alice"),
    acct: "alice@a.test",
    mastodonToken: "token",
    protection: { kind: "none" },
    services: { directory: fake.url, delivery: fake.url },
    keyPackages: 1,
    publishIdentity: false,
    retry: NO_WAIT,
    ...(clock === undefined ? {} : { clock }),
  });
}

export interface AliceAndBob {
  alice: MlsDmClient;
  bobDevice: LocalDevice;
  /** bob's state after joining, epoch 1. */
  bob: ClientState;
  groupId: string;
  /** What alice's createGroup said it added. */
  added: AddReport["added"];
}

/**
 * alice (aliceOnFake) creates a group with bob@a.test, whose one KeyPackage `fake`'s directory hands out;
 * bob joins it by the Welcome alice posted. alice has not read the hub since.
 */
export async function aliceAndBobOnFake(
  fake: FakeServices,
  name: string,
  clock?: () => number,
): Promise<AliceAndBob> {
  const bobDevice = await localDevice("acct:bob@a.test");
  const bobKp = await bobDevice.keyPackage();
  fake.keyPackages.set("bob@a.test", { deviceId: bobDevice.deviceId, keyPackage: bobKp.encoded });
  const alice = await aliceOnFake(fake, name, clock);
  const { groupId, added } = await alice.createGroup(["bob@a.test"], { allowUnverified: true });
  const welcome = decodeMessage(fake.lastWelcome!);
  if (welcome.wireformat !== "mls_welcome") throw new Error("no Welcome");
  const bob = await joinGroup(
    welcome.welcome,
    bobKp.publicPackage,
    bobKp.privatePackage,
    emptyPskIndex,
    await cipherSuite(),
    undefined,
    undefined,
    profileClientConfig(),
  );
  return { alice, bobDevice, bob, groupId, added };
}

/**
 * A note `acct` sends in `state`'s group, encrypted with ts-mls directly: the MLS message and the sender's
 * state after it. `epoch` relabels the PrivateMessage (a message that claims another epoch).
 */
export async function noteFrom(
  state: ClientState,
  acct: string,
  text: string,
  epoch?: bigint,
): Promise<{ bytes: Uint8Array; newState: ClientState }> {
  const sent = await createApplicationMessage(
    state,
    encodeCleartext(buildCreateNote(`acct:${acct}`, text)),
    await cipherSuite(),
  );
  const privateMessage = { ...sent.privateMessage, ...(epoch === undefined ? {} : { epoch }) };
  return {
    bytes: encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage }),
    newState: sent.newState,
  };
}
