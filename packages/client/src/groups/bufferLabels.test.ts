import { cipherSuite } from "@mastodon-mls/bridge";
import { createCommit, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { noteFrom, aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";

// Future-epoch messages were kept under the epoch the hub's item names, not their own (found by an
// audit). A hub labelling messages of epoch 9 as epoch 1 had them retried at every drain of the buffer;
// each went back to its end and ended that drain, so a message of the epoch just opened, queued behind
// them, stayed unread until some later item came.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "labels"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

async function bobSays(text: string, epoch?: bigint): Promise<Uint8Array> {
  const said = await noteFrom(bob, "bob@a.test", text, epoch);
  bob = said.newState;
  return said.bytes;
}

describe("messages waiting for their epoch", () => {
  it("are kept under their own epoch, not the hub's label: mislabelled ones do not hold up the rest", async () => {
    const update = await createCommit(
      { state: bob, cipherSuite: await cipherSuite() },
      { wireAsPublicMessage: true },
    );
    const forged = [await bobSays("x", 9n), await bobSays("y", 9n)];
    bob = update.newState;
    const early = await bobSays("sent after my update");
    // The message of epoch 2 comes before its commit, and two of epoch 9 labelled as of epoch 1 with it.
    fake.inject(groupId, bobDevice.deviceId, forged[0]!, 1);
    fake.inject(groupId, bobDevice.deviceId, forged[1]!, 1);
    fake.inject(groupId, bobDevice.deviceId, early, 2);
    expect(await alice.sync()).toEqual([]);
    fake.inject(groupId, bobDevice.deviceId, encodeMlsMessage(update.commit), 1, { commit: true });
    expect(await alice.sync()).toMatchObject([
      { type: "message", from: "bob@a.test", note: { content: "sent after my update" } },
    ]);
    expect(alice.epoch(groupId)).toBe(2);
  });
});
