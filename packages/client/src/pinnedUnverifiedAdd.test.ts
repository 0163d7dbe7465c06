import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { FAST_RETRY, newClient, useProxiedDirectory } from "./testSupport/instances.js";
import { swapAccountKey } from "./testSupport/keySwap.js";

// D8 lets `allowUnverified` add devices of `no-proof` and `unreachable` accounts on the offline checks
// alone: nothing contradicts the claim. A pin does. An audit found that bob's instance, having swapped in
// a key of its own (with a device under it), only had to hide the profile field (or stop answering) for
// alice, who had pinned bob's real key, to add the impersonator's device with `allowUnverified`: MV-7 and
// MV-2 decide before the pin is ever compared (MV-13). ADD-1 refuses it as key-changed.

const env = useProxiedDirectory();

async function hideProof(base: string, token: string): Promise<void> {
  const res = await fetch(`${base}/api/v1/accounts/update_credentials`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ fields_attributes: [{ name: "Website", value: "example" }] }),
  });
  expect(res.status).toBe(200);
}

describe("ADD-1: allowUnverified never overrides a pin", () => {
  it(
    "refuses a pinned contact's device certified by another key when the instance hides the proof or does not answer",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice", resolver, 2);
      await newClient(b, "bob", resolver, 2);
      expect((await alice.verify("@bob@b.test")).status).toBe("verified"); // bob's real key, pinned

      const { token } = await swapAccountKey(b, "bob", resolver);
      expect((await alice.verify("@bob@b.test")).status).toBe("key-changed");

      // The instance hides the field: no-proof. Adding with allowUnverified must not take the swapped device.
      await hideProof(b.mastodon.url, token);
      expect((await alice.verify("@bob@b.test")).status).toBe("no-proof");
      const { groupId } = await alice.createGroup([]);
      const hidden = await alice.addMembers(groupId, ["@bob@b.test"], { allowUnverified: true });
      expect(hidden.added).toEqual([]);
      expect(hidden.refused.length).toBeGreaterThan(0);
      for (const r of hidden.refused) expect(r.reason).toMatch(/^key-changed: /);

      // The instance does not answer: unreachable. Same.
      b.mastodon.fault("html502");
      try {
        const down = await alice.addMembers(groupId, ["@bob@b.test"], { allowUnverified: true });
        expect(down.added).toEqual([]);
        expect(down.refused.length).toBeGreaterThan(0);
        for (const r of down.refused) expect(r.reason).toMatch(/^key-changed: /);
      } finally {
        b.mastodon.fault("none");
      }
      expect(alice.members(groupId).map((m) => m.acct)).toEqual(["alice@a.test"]);
    },
  );

  it(
    "still adds a pinned contact's own devices (the pinned key) with allowUnverified while the proof is hidden",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice2", resolver, 2);
      const carol = await newClient(b, "carol", resolver, 2);
      expect((await alice.verify("@carol@b.test")).status).toBe("verified");
      const token = b.mastodon.issueToken({ username: "carol", scopes: "read write" });
      await hideProof(b.mastodon.url, token);
      const { groupId } = await alice.createGroup([]);
      const report = await alice.addMembers(groupId, ["@carol@b.test"], { allowUnverified: true });
      expect(report.refused).toEqual([]);
      expect(report.added).toEqual([{ acct: "carol@b.test", deviceId: carol.deviceId }]);
    },
  );
});

/** A KeyPackage (not last resort) still in a device's store. */
async function storedKeyPackage(dir: string): Promise<string> {
  for (const f of await readdir(join(dir, "keypackages"))) {
    const rec = JSON.parse(await readFile(join(dir, "keypackages", f), "utf8")) as {
      keyPackage?: string;
      lastResort?: boolean;
    };
    if (rec.keyPackage !== undefined && rec.lastResort === false) return rec.keyPackage;
  }
  throw new Error("no KeyPackage left");
}

describe("ADD-1: allowUnverified takes a pinned account's devices from its list only", () => {
  it(
    "refuses a revoked device (certified by the pinned key) that the directory hands out while the proof is hidden",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver, proxy } = env;
      const alice = await newClient(a, "alice3", resolver, 2);
      const gus = await newClient(b, "gus", resolver, 2);
      const gusToken = b.mastodon.issueToken({ username: "gus", scopes: "read write" });
      const { text } = await gus.backupAccountKey({ passphrase: "gus backup", insecureTestKdf: true });
      const phone = await MlsDmClient.restore({
        dir: join(await mkdtemp(join(tmpdir(), "mls-dm-gus2-")), "device"),
        protection: { kind: "none" },
        backup: text,
        secret: "gus backup",
        mastodonToken: gusToken,
        services: resolver,
        keyPackages: 3,
        retry: FAST_RETRY,
        insecureTestKdf: true,
      });
      expect((await alice.verify("@gus@b.test")).status).toBe("verified"); // pinned, list version 2
      const phoneKeyPackage = await storedKeyPackage(phone.dir);
      // gus's phone is stolen: he revokes it (list version 3). Its certificate, by gus's key, stays valid.
      await gus.revokeDevice(phone.deviceId);
      expect((await alice.verify("@gus@b.test")).status).toBe("verified");

      // gus's instance hides his proof; his directory hands out the thief's KeyPackage of the phone.
      await hideProof(b.mastodon.url, gusToken);
      proxy.intercept = (req) =>
        req.method === "POST" && req.path === "/v1/claims" && req.body.toString("utf8").includes("gus@b.test")
          ? {
              status: 200,
              body: {
                accounts: [
                  {
                    acct: "gus@b.test",
                    status: "ok",
                    key_packages: [
                      { device_id: phone.deviceId, key_package: phoneKeyPackage, last_resort: false },
                    ],
                    exhausted: [],
                  },
                ],
              },
            }
          : undefined;
      try {
        const { groupId } = await alice.createGroup([]);
        const report = await alice.addMembers(groupId, ["@gus@b.test"], { allowUnverified: true });
        expect(report.added).toEqual([]);
        expect(report.refused).toHaveLength(1);
        expect(report.refused[0]!.reason).toMatch(/^revoked: /);
      } finally {
        proxy.intercept = () => undefined;
      }
    },
  );
});
