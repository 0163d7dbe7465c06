import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
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
// link while its home directory fails the PUT of the new list; meanwhile the restored device publishes a
// list of its own, so the directory refuses the first one's version as stale for good. Before the fix
// every open of the first device published that version again and failed (device_list_conflict): no
// command, not even reading history, worked on it any more. Found by an audit.

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

async function newDevice(name: string) {
  const store = await DeviceStore.create(join(await mkdtemp(join(tmpdir(), "mls-dm-link-")), "d"), {
    kind: "none",
  });
  const mastodonToken = a.mastodon.issueToken({ username: "alice", scopes: "read write" });
  return MlsDmClient.beginLink(store, { acct: "alice@a.test", mastodonToken, deviceName: name });
}

it(
  "a device holding the account key still opens after its approval lost to another's list, and says so",
  { timeout: 60_000 },
  async () => {
    const alice = await newClient(a, "alice", resolver);
    const backup = await alice.backupAccountKey({ passphrase: "a long backup passphrase" });
    const restored = await MlsDmClient.restore({
      dir: join(await mkdtemp(join(tmpdir(), "mls-dm-restored-")), "d"),
      protection: { kind: "none" },
      backup: backup.text,
      secret: "a long backup passphrase",
      mastodonToken: a.mastodon.issueToken({ username: "alice", scopes: "read write" }),
      services: resolver,
      keyPackages: 1,
      retry: FAST_RETRY,
    });
    const { groupId } = await alice.createGroup([]);
    await alice.send(groupId, "kept on this device");

    // alice approves a phone; the directory fails the PUT of the new list.
    const phone = await newDevice("phone");
    proxy.intercept = (req) =>
      req.method === "PUT" && req.path.endsWith("/device-list") ? { status: 503, body: "down" } : undefined;
    await expect(alice.approveLink(phone.code, phone.confirmation)).rejects.toThrow();
    proxy.intercept = () => undefined;
    // Meanwhile the restored device approves a tablet: the directory's list moves on.
    const tablet = await newDevice("tablet");
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
