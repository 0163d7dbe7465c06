import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { cipherSuite } from "@mastodon-mls/bridge";
import { encodeCleartext } from "@mastodon-mls/protocol";
import { createApplicationMessage, encodeMlsMessage, type ClientState } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildCreateNote } from "../cleartext.js";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { LocalDevice } from "../testSupport/localDevices.js";
import { MAX_BUFFERED_BYTES } from "./receive.js";

// Messages of a future epoch wait in group.json for the commit that opens it. An honest hub never sends
// them before that commit; a hostile one could send a thousand of a megabyte each, and every later save
// of the group rewrote them all (33 MB after 24), until the record no longer fit in a string and sync()
// failed for every hub after it. They are now bounded in bytes too (found by an audit).

let fake: FakeServices;
let alice: MlsDmClient;
let bobDevice: LocalDevice;
let bob: ClientState;
let groupId: string;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, bobDevice, bob, groupId } = await aliceAndBobOnFake(fake, "flood"));
  await alice.sync();
});
afterEach(() => fake.stop());

async function bobSays(text: string): Promise<Uint8Array> {
  const note = encodeCleartext(buildCreateNote("acct:bob@a.test", text));
  const sent = await createApplicationMessage(bob, note, await cipherSuite());
  bob = sent.newState;
  return encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_private_message",
    privateMessage: sent.privateMessage,
  });
}

/** A message the hub says is of epoch 1000: about 1 MiB of ciphertext nobody can open. */
async function bigFutureMessage(): Promise<Uint8Array> {
  const note = encodeCleartext(buildCreateNote("acct:bob@a.test", "x"));
  const sent = await createApplicationMessage(bob, note, await cipherSuite());
  return encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_private_message",
    privateMessage: {
      ...sent.privateMessage,
      epoch: 1000n,
      ciphertext: new Uint8Array(randomBytes(1024 * 1024 - 512)),
    },
  });
}

describe("future-epoch messages from a hostile hub", () => {
  it(
    "are kept up to a byte bound, the rest reported undecryptable, and the group still works",
    { timeout: 120_000 },
    async () => {
      for (let i = 0; i < 8; i++) fake.inject(groupId, bobDevice.deviceId, await bigFutureMessage(), 1000);
      const events = await alice.sync();
      const refused = events.filter((e) => e.type === "undecryptable");
      // 1 MiB is about 1.33 MiB stored (base64): three fit in 4 MiB, the other five are reported.
      expect(refused).toHaveLength(5);
      expect(refused[0]).toMatchObject({ reason: expect.stringMatching(/too many bytes/) });
      const groupJson = join(alice.dir, "groups", groupId, "group.json");
      expect(statSync(groupJson).size).toBeLessThan(MAX_BUFFERED_BYTES + 512 * 1024);

      fake.inject(groupId, bobDevice.deviceId, await bobSays("still here?"), 1);
      const later = await alice.sync();
      expect(later.filter((e) => e.type === "message")).toHaveLength(1);
    },
  );
});
