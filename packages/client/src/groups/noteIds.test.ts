import { randomUUID } from "node:crypto";
import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { AS_CONTEXT, encodeCleartext, type Activity } from "@mastodon-mls/protocol";
import {
  createApplicationMessage,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  type ClientState,
} from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildCreateNote } from "../cleartext.js";
import { MlsDmClient } from "../client.js";
import { decodeMessage } from "../mls/codec.js";
import { aliceOnFake, NO_WAIT } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice, type LocalDevice } from "../testSupport/localDevices.js";

// TXT-6: a note id (and an activity id) is its first author's. Before, carol could send a note of her
// own under the id of bob's; every client then refused bob's Update and Delete of it ("only carol may…",
// TXT-5 finding her copy), and bob was never told. Found by an audit.

let fake: FakeServices;
let alice: MlsDmClient;
let groupId: string;
const members: Record<"bob" | "carol", { device: LocalDevice; state: ClientState }> = {} as never;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  const bobDevice = await localDevice("acct:bob@a.test");
  const carolDevice = await localDevice("acct:carol@a.test");
  const bobKp = await bobDevice.keyPackage();
  const carolKp = await carolDevice.keyPackage();
  fake.keyPackages.set("bob@a.test", { deviceId: bobDevice.deviceId, keyPackage: bobKp.encoded });
  fake.keyPackages.set("carol@a.test", { deviceId: carolDevice.deviceId, keyPackage: carolKp.encoded });
  alice = await aliceOnFake(fake, "noteids");
  ({ groupId } = await alice.createGroup(["bob@a.test", "carol@a.test"], { allowUnverified: true }));
  const welcome = decodeMessage(fake.lastWelcome!);
  if (welcome.wireformat !== "mls_welcome") throw new Error("no Welcome");
  const join = async (kp: typeof bobKp) =>
    joinGroup(
      welcome.welcome,
      kp.publicPackage,
      kp.privatePackage,
      emptyPskIndex,
      await cipherSuite(),
      undefined,
      undefined,
      profileClientConfig(),
    );
  members.bob = { device: bobDevice, state: await join(bobKp) };
  members.carol = { device: carolDevice, state: await join(carolKp) };
  await alice.sync();
});
afterEach(() => fake.stop());

async function post(who: "bob" | "carol", activity: Activity): Promise<void> {
  const m = members[who];
  const sent = await createApplicationMessage(m.state, encodeCleartext(activity), await cipherSuite());
  m.state = sent.newState;
  const bytes = encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_private_message",
    privateMessage: sent.privateMessage,
  });
  fake.inject(groupId, m.device.deviceId, bytes, Number(sent.privateMessage.epoch));
}

type Create = Extract<Activity, { type: "Create" }>;
const base = (who: string) => ({
  "@context": AS_CONTEXT as typeof AS_CONTEXT,
  v: 1 as const,
  id: `urn:uuid:${randomUUID()}`,
  actor: `acct:${who}@a.test`,
  published: new Date().toISOString(),
});

describe("TXT-6: ids are their first author's", () => {
  it("refuses a note reusing the id of another member's, so its author can still edit and delete it", async () => {
    const original = buildCreateNote("acct:bob@a.test", "the meeting is at 5, room 12") as Create;
    const noteId = original.object.id;
    await post("bob", original);
    const copy = buildCreateNote("acct:carol@a.test", "+1") as Create;
    await post("carol", { ...copy, object: { ...copy.object, id: noteId } });
    // carol also reuses the id of bob's activity itself.
    await post("carol", { ...buildCreateNote("acct:carol@a.test", "me too"), id: original.id });
    await post("bob", {
      ...base("bob"),
      type: "Update",
      object: { ...original.object, content: "the meeting is at 6, room 14" },
    });
    await post("bob", { ...base("bob"), type: "Delete", object: noteId });

    const events = await alice.sync();

    expect(events.filter((e) => e.type === "message").map((e) => e.type === "message" && e.from)).toEqual([
      "bob@a.test",
    ]);
    const refused = events.filter((e) => e.type === "refused");
    expect(refused.map((e) => e.type === "refused" && [e.from, e.reason])).toEqual([
      ["carol@a.test", expect.stringMatching(/note id is already bob@a.test's/)],
      ["carol@a.test", expect.stringMatching(/activity id is already bob@a.test's/)],
    ]);
    expect(
      events.flatMap((e) => (e.type === "activity" && e.from === "bob@a.test" ? [e.activity.type] : [])),
    ).toEqual(["Update", "Delete"]);
    // The rule holds across processes: a device opened afresh reads the ids from the history on disk.
    await post("carol", { ...base("carol"), type: "Delete", object: noteId });
    const again = await MlsDmClient.open(alice.dir, { retry: NO_WAIT });
    const later = await again.sync();
    expect(later.filter((e) => e.type === "refused").map((e) => e.type === "refused" && e.reason)).toEqual([
      expect.stringMatching(/only bob@a.test may delete/),
    ]);
  });
});
