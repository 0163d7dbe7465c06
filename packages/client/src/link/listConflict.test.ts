import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { capturedIo } from "../testSupport/cliIo.js";
import { main } from "../cli/main.js";
import { MlsDmClient } from "../client.js";
import { DeviceStore } from "../store/deviceStore.js";
import { HubProxy } from "../testSupport/hubProxy.js";
import {
  FAST_RETRY,
  newClient,
  startInstance,
  stopInstance,
  type Instance,
} from "../testSupport/instances.js";
import { StaticResolver } from "../transport/resolver.js";

// Two devices hold the account key (the first, and one restored from the backup). The first approves a
// link, or revokes a device, while its home directory fails the PUT of the new list; meanwhile the
// restored device publishes a list of its own, so the directory refuses the first one's version as stale
// for good. Before the fix every open of the first device published that version again and failed
// (device_list_conflict): no command worked on it any more (found by an audit). Then, from a review of
// the fix: the user must hear of the dropped change from whichever command opened the device (it was
// only an event, which `send` and most commands never show), and a device the list no longer names must
// be told it was revoked.

const proxy = new HubProxy();
let a: Instance;
let resolver: StaticResolver;
beforeAll(async () => {
  await proxy.start();
  a = await startInstance("a.test", { directoryEnv: { PUBLIC_URL: proxy.url } });
  proxy.target = a.urls.directory;
  resolver = new StaticResolver({
    "a.test": { directory: proxy.url, delivery: a.urls.delivery, mastodon: a.mastodon.url },
  });
});
afterAll(async () => {
  await stopInstance(a);
  await proxy.stop();
});

const token = (u: string) => a.mastodon.issueToken({ username: u, scopes: "read write" });
const tmp = async (p: string) => join(await mkdtemp(join(tmpdir(), p)), "d");

async function setUp(user: string) {
  const first = await newClient(a, user, resolver);
  const backup = (await first.backupAccountKey({ passphrase: "a long backup passphrase" })).text;
  const restore = async () =>
    MlsDmClient.restore({
      dir: await tmp("mls-dm-restored-"),
      protection: { kind: "none" },
      backup,
      secret: "a long backup passphrase",
      mastodonToken: token(user),
      services: resolver,
      keyPackages: 1,
      retry: FAST_RETRY,
    });
  const link = async (name: string) =>
    MlsDmClient.beginLink(await DeviceStore.create(await tmp("mls-dm-link-"), { kind: "none" }), {
      acct: `${user}@a.test`,
      mastodonToken: token(user),
      deviceName: name,
    });
  return { first, restore, link };
}

function putFails(): void {
  proxy.intercept = (r) =>
    r.method === "PUT" && r.path.endsWith("/device-list") ? { status: 503, body: "down" } : undefined;
}

it(
  "a revocation dropped for another device's newer list is said by the command that opened the device",
  { timeout: 60_000 },
  async () => {
    const { first: alice, restore, link } = await setUp("alice");
    const phone = await link("phone");
    await alice.approveLink(phone.code, phone.confirmation);
    const phoneId = (await alice.devices()).devices.find((d) => d.name === "phone")!.deviceId;
    const restored = await restore();
    const { groupId } = await alice.createGroup([]);
    // The phone is stolen; alice revokes it while her directory fails the PUT.
    putFails();
    await expect(alice.revokeDevice(phoneId)).rejects.toThrow();
    proxy.intercept = () => undefined;
    // Meanwhile the restored device approves a tablet, on a list that still names the phone.
    const tablet = await link("tablet");
    await restored.approveLink(tablet.code, tablet.confirmation);

    const io = capturedIo();
    const map = JSON.stringify({
      "a.test": { directory: proxy.url, delivery: a.urls.delivery, mastodon: a.mastodon.url },
    });
    expect(await main(["--dir", alice.dir, "--services-map", map, "send", groupId, "hello"], io)).toBe(0);
    expect(io.stderr.join("\n")).toMatch(
      /warning: another device holding the account key .* revoke the device again/s,
    );
    // The phone is listed again: revoking it again is what the warning asks for, and it works.
    const again = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    expect((await again.devices()).devices.map((d) => d.deviceId)).toContain(phoneId);
    await again.revokeDevice(phoneId);
    expect((await again.devices()).devices.map((d) => d.deviceId)).not.toContain(phoneId);
  },
);

it(
  "a list adopted from the directory that no longer names this device says it was revoked",
  { timeout: 60_000 },
  async () => {
    const { first: laptop, restore, link } = await setUp("bob");
    const restored = await restore();
    const phone = await link("phone");
    putFails();
    await expect(laptop.approveLink(phone.code, phone.confirmation)).rejects.toThrow();
    proxy.intercept = () => undefined;
    // The laptop is lost: the restored device revokes it.
    await restored.revokeDevice(laptop.deviceId);

    const reopened = await MlsDmClient.open(laptop.dir, { services: resolver, retry: FAST_RETRY });
    expect(reopened.openNotices).toEqual([expect.stringMatching(/this device was revoked by the other one/)]);
    expect((await reopened.devices()).devices.map((d) => d.deviceId)).not.toContain(laptop.deviceId);
  },
);

it(
  "a device holding the account key still opens after its approval lost to another's list, and says so",
  { timeout: 60_000 },
  async () => {
    const { first: alice, restore, link } = await setUp("carol");
    const restored = await restore();
    const { groupId } = await alice.createGroup([]);
    await alice.send(groupId, "kept on this device");

    // alice approves a phone; the directory fails the PUT of the new list.
    const phone = await link("phone");
    proxy.intercept = (req) =>
      req.method === "PUT" && req.path.endsWith("/device-list") ? { status: 503, body: "down" } : undefined;
    await expect(alice.approveLink(phone.code, phone.confirmation)).rejects.toThrow();
    proxy.intercept = () => undefined;
    // Meanwhile the restored device approves a tablet: the directory's list moves on.
    const tablet = await link("tablet");
    await restored.approveLink(tablet.code, tablet.confirmation);

    // The first open says the approval was dropped, and opens; the next has nothing left to say.
    const first = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    expect(await first.history(groupId)).toHaveLength(1);
    const events = await first.sync();
    expect(events).toContainEqual(
      expect.objectContaining({
        type: "error",
        operation: "publishing the account's device list",
        message: expect.stringMatching(/another device holding the account key .* make the change again/),
      }),
    );
    const names = async (c: MlsDmClient) => (await c.devices()).devices.map((d) => d.name).sort();
    expect(await names(first)).not.toContain("phone");
    expect(await names(first)).toContain("tablet");
    const second = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    expect((await second.sync()).filter((e) => e.type === "error")).toEqual([]);

    // Approving the phone again works, on top of the restored device's list (the tablet stays).
    await second.approveLink(phone.code, phone.confirmation);
    expect(await names(second)).toEqual(expect.arrayContaining(["phone", "tablet"]));
  },
);
