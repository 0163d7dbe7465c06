import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { DeviceStore } from "../store/deviceStore.js";
import { FAST_RETRY, newClient, useOneInstance } from "../testSupport/instances.js";

// LNK-11 (found by an audit): a link started in a directory (link.json), interrupted, and the directory
// then given a device of its own (`create`, or `restore` from the account-key backup). Finishing the
// link there wrote the linked device's device.json over the one already in it — its keys, and with a
// restore the account key — gone without a word. Finishing must refuse, as beginning does. And the
// same for a restore (a regression test: it refused already).

const env = useOneInstance();

it(
  "LNK-11: finishing a link in a directory that meanwhile got a device refuses and keeps that device",
  {
    timeout: 60_000,
  },
  async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice", resolver, 1);
    a.mastodon.createAccount({ username: "bob" });
    const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-link-then-create-")), "device");
    const store = await DeviceStore.create(dir, { kind: "none" });
    const setup = {
      acct: alice.acct,
      mastodonToken: a.mastodon.issueToken({ username: "alice", scopes: "read write" }),
      deviceName: "phone",
      keyPackages: 1,
    };
    const pending = await MlsDmClient.beginLink(store, setup);
    // The link is cut short; the same directory becomes bob's device.
    const bob = await MlsDmClient.createInStore(store, {
      acct: "bob@a.test",
      mastodonToken: a.mastodon.issueToken({ username: "bob", scopes: "read write" }),
      services: resolver,
      keyPackages: 1,
      retry: FAST_RETRY,
    });
    const bobDevice = bob.deviceId;
    await alice.approveLink(pending.code, pending.confirmation);

    await expect(
      MlsDmClient.finishLink(
        store,
        { ...setup, services: resolver, retry: FAST_RETRY },
        { timeoutMs: 10_000, pollMs: 100 },
      ),
    ).rejects.toMatchObject({ code: "device_exists" });
    const reopened = await MlsDmClient.open(dir);
    expect(reopened.acct).toBe("bob@a.test");
    expect(reopened.deviceId).toBe(bobDevice);
  },
);

it(
  "restoring the account-key backup onto a directory that holds a device refuses and keeps that device",
  {
    timeout: 60_000,
  },
  async () => {
    const { a, resolver } = env;
    const carol = await newClient(a, "carol", resolver, 1);
    const backup = (await carol.backupAccountKey({ passphrase: "a long backup passphrase" })).text;
    const dave = await newClient(a, "dave", resolver, 1);
    const dir = dave.dir;
    await expect(
      MlsDmClient.restore({
        dir,
        protection: { kind: "none" },
        backup,
        secret: "a long backup passphrase",
        mastodonToken: a.mastodon.issueToken({ username: "carol", scopes: "read write" }),
        services: resolver,
        keyPackages: 1,
        retry: FAST_RETRY,
      }),
    ).rejects.toMatchObject({ code: "device_exists" });
    const reopened = await MlsDmClient.open(dir);
    expect([reopened.acct, reopened.deviceId]).toEqual(["dave@a.test", dave.deviceId]);
  },
);
