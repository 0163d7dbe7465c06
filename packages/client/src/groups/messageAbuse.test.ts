import { type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { noteFrom, aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";

// Application messages a member or the hub can abuse (an audit's cases): each is refused with an event
// that says why, and the group goes on.

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "abuse"));
  expect(await alice.sync()).toEqual([]);
});
afterEach(() => fake.stop());

async function bobSays(text: string): Promise<Uint8Array> {
  const said = await noteFrom(bob, "bob@a.test", text);
  bob = said.newState;
  return said.bytes;
}

describe("application messages", () => {
  it("a message delivered again under another seq (a replay) is undecryptable, with its reason", async () => {
    const once = await bobSays("once");
    fake.inject(groupId, bobDevice.deviceId, once, 1);
    const again = fake.inject(groupId, bobDevice.deviceId, once, 1);
    const events = await alice.sync();
    expect(events).toMatchObject([
      { type: "message", note: { content: "once" } },
      { type: "undecryptable", seq: again, reason: expect.any(String) as string },
    ]);
    fake.inject(groupId, bobDevice.deviceId, await bobSays("twice"), 1);
    expect(await alice.sync()).toMatchObject([{ type: "message", note: { content: "twice" } }]);
  });

  it("a generation far ahead of the ratchet is refused without ratcheting there (ts-mls's bound, 200 steps)", async () => {
    for (let i = 0; i < 250; i++) await bobSays(`unsent ${i}`);
    const seq = fake.inject(groupId, bobDevice.deviceId, await bobSays("far ahead"), 1);
    expect(await alice.sync()).toMatchObject([
      { type: "undecryptable", seq, reason: expect.stringMatching(/too far in the future/) as string },
    ]);
    await alice.send(groupId, "still here");
  });
});
