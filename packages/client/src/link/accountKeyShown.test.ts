import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { DeviceStore } from "../store/deviceStore.js";
import {
  FAST_RETRY,
  newClient,
  resolverFor,
  startInstance,
  stopInstance,
  type Instance,
} from "../testSupport/instances.js";
import type { StaticResolver } from "../transport/resolver.js";

// LNK-12 (found by an audit): the new device trusts the account key its home instance's profile and home
// directory vouch for (LNK-8). Hostile together, they could certify it under a key of their own, and
// nothing at link time let the person notice. Now the approving device says which account key certified
// the device and the linked device which one it pinned: the two fingerprints are compared on both screens.

let a: Instance;
let resolver: StaticResolver;
beforeAll(async () => {
  a = await startInstance("a.test");
  resolver = resolverFor([a]);
});
afterAll(async () => {
  await stopInstance(a);
});

it(
  "LNK-12: the approval and the linked device show the same account-key fingerprint, the account's",
  {
    timeout: 60_000,
  },
  async () => {
    const alice = await newClient(a, "alice", resolver, 1);
    const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-link-fp-")), "device");
    const store = await DeviceStore.create(dir, { kind: "none" });
    const setup = {
      acct: alice.acct,
      mastodonToken: a.mastodon.issueToken({ username: "alice", scopes: "read write" }),
      deviceName: "phone",
      keyPackages: 1,
    };
    const pending = await MlsDmClient.beginLink(store, setup);
    const approval = await alice.approveLink(pending.code, pending.confirmation);
    const phone = await MlsDmClient.finishLink(
      store,
      { ...setup, services: resolver, retry: FAST_RETRY },
      { timeoutMs: 10_000, pollMs: 100 },
    );
    expect(approval.accountKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(approval.accountKey).toBe(alice.accountKeyFingerprint);
    expect(phone.holdsAccountKey).toBe(false);
    expect(phone.accountKeyFingerprint).toBe(approval.accountKey);
  },
);
