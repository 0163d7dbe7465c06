import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { encodeCleartext, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  decodeMlsMessage,
  encodeMlsMessage,
} from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildCreateNote } from "../cleartext.js";
import { MlsDmClient } from "../client.js";
import type { DeviceContext } from "../context.js";
import { DeviceStore } from "../store/deviceStore.js";
import { NO_WAIT, aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice } from "../testSupport/localDevices.js";
import { StaticResolver } from "../transport/resolver.js";

// A group id names a group at its hub only. Before the fix, a Welcome from any hub the device polls (one
// invitation makes it poll a stranger's) naming the id of a group the device had left took that group's
// record over: `joined`, active again at the stranger's hub with the stranger as the other member, the old
// group's history shown as this one's. Found by an audit.

let fake: FakeServices;
let alice: MlsDmClient;
let groupId: string;
let evil: Server;
let evilUrl = "";
let welcomeItem: Record<string, unknown> | undefined;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  const made = await aliceAndBobOnFake(fake, "foreignwelcome");
  ({ alice, groupId } = made);
  const note = encodeCleartext(buildCreateNote("acct:bob@a.test", "only between us two"));
  const said = await createApplicationMessage(made.bob, note, await cipherSuite());
  fake.inject(
    groupId,
    made.bobDevice.deviceId,
    encodeMlsMessage({
      version: "mls10",
      wireformat: "mls_private_message",
      privateMessage: said.privateMessage,
    }),
    1,
  );
  await alice.sync();
  evil = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    if (req.method === "GET" && req.url?.startsWith("/v1/inbox")) {
      res.end(JSON.stringify({ items: welcomeItem ? [welcomeItem] : [], cursor: "1", more: false }));
    } else if (req.method === "POST" && req.url === "/v1/inbox/ack") {
      res.end(JSON.stringify({ acked: true }));
    } else {
      res.statusCode = 404;
      res.end(JSON.stringify({ error: "not_found", message: "Not found." }));
    }
  });
  await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
  evilUrl = `http://127.0.0.1:${(evil.address() as AddressInfo).port}`;
});
afterEach(async () => {
  await new Promise<void>((resolve) => evil.close(() => resolve()));
  await fake.stop();
});

describe("a Welcome from another hub for a group this device knew", () => {
  it("is refused, and the old group's record, history and hub stay as they were", async () => {
    await alice.leave(groupId);
    expect(alice.groups().find((g) => g.groupId === groupId)).toMatchObject({
      status: "left",
      hub: fake.url,
    });
    // mallory makes a group of the same id on his hub and adds alice by one of her KeyPackages.
    const store = await DeviceStore.open(alice.dir);
    const ref = (await store.listKeyPackageRefs())[0]!;
    const kp = decodeMlsMessage(fromBase64url((await store.readKeyPackage(ref))!.keyPackage), 0)![0];
    if (kp.wireformat !== "mls_key_package") throw new Error("no KeyPackage");
    const cs = await cipherSuite();
    const mallory = await (await localDevice("acct:mallory@a.test")).keyPackage();
    const own = await createGroup(
      fromBase64url(groupId),
      mallory.publicPackage,
      mallory.privatePackage,
      [],
      cs,
      profileClientConfig(),
    );
    const added = await createCommit(
      { state: own, cipherSuite: cs },
      {
        extraProposals: [{ proposalType: "add", add: { keyPackage: kp.keyPackage } }],
        wireAsPublicMessage: true,
        ratchetTreeExtension: true,
      },
    );
    welcomeItem = {
      kind: "welcome",
      group_id: groupId,
      seq: 1_000_000,
      welcome: toBase64url(
        encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: added.welcome! }),
      ),
      cursor: "1",
    };
    // What one invitation naming his hub does. His hub is on this machine here, so the device runs on a
    // development map (in production NET-7 keeps it from connecting to a hub on loopback at all).
    alice = await MlsDmClient.open(alice.dir, {
      services: new StaticResolver({ "a.test": { directory: fake.url, delivery: fake.url } }),
      retry: NO_WAIT,
    });
    await (alice as unknown as { ctx: DeviceContext }).ctx.rememberHub(evilUrl);

    const events = await alice.sync();

    expect(events.filter((e) => e.type === "joined")).toEqual([]);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: "undecryptable",
        groupId,
        reason: expect.stringMatching(/knew at another hub/),
      }),
    );
    expect(alice.groups().find((g) => g.groupId === groupId)).toMatchObject({
      status: "left",
      hub: fake.url,
    });
    expect((await alice.history(groupId)).map((h) => h.from)).toEqual(["bob@a.test"]);
  });
});
