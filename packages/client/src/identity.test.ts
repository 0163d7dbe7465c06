import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  decodeDeviceList,
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  signDeviceCertificate,
} from "@mastodon-mls/bridge";
import { formatIdentity, fromBase64url, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { afterAll, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { FAST_RETRY, newClient, useTwoInstances } from "./testSupport/instances.js";
import { DirectoryClient } from "./transport/directoryClient.js";
import { StaticResolver } from "./transport/resolver.js";
import { swapAccountKey } from "./testSupport/keySwap.js";
import { settle } from "./testSupport/settle.js";

// Identity wired into the client (issue 3): published proofs and device lists, member statuses,
// pins, refusing devices that do not verify. alice@a.test and bob@b.test (carol@b.test for additions),
// real directories and hubs, fake Mastodons; one story, each step building on the last.

const env = useTwoInstances();
let rogue: Server | undefined;
let aliceDir: string | undefined;

afterAll(async () => {
  rogue?.closeAllConnections();
  await new Promise<void>((r) => (rogue ? rogue.close(() => r()) : r()));
});

const statusOf = (c: MlsDmClient, groupId: string, acct: string) =>
  [
    ...new Set(
      c
        .members(groupId)
        .filter((m) => m.acct === acct)
        .map((m) => m.status),
    ),
  ].join(",");

/** A directory stand-in for b.test: forwards everything to the real one but answers claims with a
 * KeyPackage for a device key it made itself, certified by an account key it made itself. */
async function rogueDirectory(real: string, acct: string): Promise<string> {
  const accountKey = await generateSigningKeyPair();
  const deviceKey = await generateSigningKeyPair();
  const identity = formatIdentity(parseAcct(acct));
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: accountKey.publicKey,
      sigKey: deviceKey.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    accountKey.signKey,
  );
  const kp = await generateDeviceKeyPackage({ identity, signatureKeyPair: deviceKey, certificate });
  rogue = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        if (req.method === "POST" && req.url === "/v1/claims") {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              accounts: [
                {
                  acct,
                  status: "ok",
                  key_packages: [
                    {
                      device_id: deviceIdText(deviceKey.publicKey),
                      key_package: toBase64url(kp.encoded),
                      last_resort: false,
                    },
                  ],
                  exhausted: [],
                },
              ],
            }),
          );
          return;
        }
        const answer = await fetch(new URL(req.url!, real), {
          method: req.method!,
          headers: {
            "content-type": "application/json",
            ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
          },
          body: chunks.length > 0 ? Buffer.concat(chunks) : undefined,
        });
        res.writeHead(answer.status, { "content-type": "application/json" });
        res.end(await answer.text());
      })().catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => rogue!.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(rogue.address() as AddressInfo).port}`;
}

describe("identity: proofs, statuses, pins, refusals", () => {
  it("verified both ways; malicious directory refused; revoked; unreachable; verified-oob; key-changed refuses new devices", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver, 2);
    aliceDir = alice.dir;
    const bob = await newClient(b, "bob", resolver, 2);
    const carol = await newClient(b, "carol", resolver, 2);

    // Set-up published the list (v1) and the proof, then registered.
    const served = await new DirectoryClient(b.urls.directory).accountDevices("bob@b.test");
    expect(decodeDeviceList(fromBase64url(served.device_list!)).version).toBe(1);
    expect((await bob.devices()).devices.map((d) => d.self)).toEqual([true]);

    const { groupId } = await alice.createGroup(["@bob@b.test"]);
    const events = await settle([bob, alice]);
    expect(statusOf(alice, groupId, "bob@b.test")).toBe("verified");
    expect(statusOf(bob, groupId, "alice@a.test")).toBe("verified");
    expect(statusOf(alice, groupId, "alice@a.test")).toBe("verified");
    expect(
      events
        .get(alice)!
        .some((e) => e.type === "status_changed" && e.acct === "bob@b.test" && e.status === "verified"),
    ).toBe(true);
    const fromAlice = await alice.verify("@bob@b.test", { groupId });
    const fromBob = await bob.verify("@alice@a.test");
    expect(fromAlice.safetyNumber!.digits).toHaveLength(60);
    expect(fromAlice.safetyNumber!.digits).toBe(fromBob.safetyNumber!.digits);

    // A directory serving a KeyPackage for a key it generated: refused, and why.
    const evilUrl = await rogueDirectory(b.urls.directory, "carol@b.test");
    const fooled = await MlsDmClient.open(alice.dir, {
      services: new StaticResolver({
        "a.test": { ...a.urls, mastodon: a.mastodon.url },
        "b.test": { directory: evilUrl, delivery: b.urls.delivery, mastodon: b.mastodon.url },
      }),
      retry: FAST_RETRY,
    });
    const refusedRogue = await fooled.addMembers(groupId, ["@carol@b.test"]);
    expect(refusedRogue.added).toEqual([]);
    expect(refusedRogue.refused).toHaveLength(1);
    expect(refusedRogue.refused[0]!.reason).toMatch(/^(invalid|revoked): /);

    // bob restores the account key on a second device: list v2, proof v2; alice adds it.
    const { text } = await bob.backupAccountKey({
      passphrase: "bob's backup passphrase",
      insecureTestKdf: true,
    });
    const bob2 = await MlsDmClient.restore({
      dir: join(await mkdtemp(join(tmpdir(), "mls-dm-bob2-")), "device"),
      protection: { kind: "none" },
      backup: text,
      secret: "bob's backup passphrase",
      mastodonToken: b.mastodon.issueToken({ username: "bob", scopes: "read write" }),
      services: resolver,
      keyPackages: 2,
      deviceName: "bob's laptop",
      retry: FAST_RETRY,
      insecureTestKdf: true,
    });
    expect((await bob2.devices()).devices.map((d) => `${d.name}${d.self ? " (self)" : ""}`)).toContain(
      "bob's laptop (self)",
    );
    const added = await alice.addMembers(groupId, ["@bob@b.test"]);
    expect(added.refused).toEqual([]);
    expect(added.added.map((x) => x.deviceId)).toEqual([bob2.deviceId]);
    await settle([bob, bob2, alice]);
    expect(
      (await alice.verifyMembers(groupId, { fresh: true })).filter((m) => m.acct === "bob@b.test"),
    ).toHaveLength(2);

    // bob revokes bob2: alice, before seeing bob's Remove, sees that leaf revoked; then it is gone.
    const revoked = await bob.revokeDevice(bob2.deviceId);
    expect(revoked).toEqual({ version: 3, removedFrom: [groupId] });
    const before = await alice.verifyMembers(groupId, { fresh: true });
    expect(before.find((m) => m.deviceId === bob2.deviceId)!.status).toBe("revoked");
    await settle([alice, bob]);
    expect(alice.members(groupId).map((m) => m.deviceId)).not.toContain(bob2.deviceId);
    expect(statusOf(alice, groupId, "bob@b.test")).toBe("verified");

    // b.test's Mastodon down: unreachable, never a mismatch; adding its people is refused unless asked.
    b.mastodon.fault("html502");
    try {
      const fresh = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
      await fresh.verifyMembers(groupId);
      expect(statusOf(fresh, groupId, "bob@b.test")).toBe("unreachable");
      const refused = await fresh.addMembers(groupId, ["@carol@b.test"]);
      expect(refused.added).toEqual([]);
      expect(refused.refused[0]!.reason).toMatch(/^unreachable: .*allowUnverified/);
      const forced = await fresh.addMembers(groupId, ["@carol@b.test"], { allowUnverified: true });
      expect(forced.added.map((x) => x.acct)).toEqual(["carol@b.test"]);
    } finally {
      b.mastodon.fault("none");
    }
    await settle([alice, bob, carol]);

    // Safety numbers compared: verified-oob.
    const confirmed = await alice.confirmSafetyNumber("@bob@b.test", { typed: fromAlice.safetyNumber!.text });
    expect(confirmed.status).toBe("verified-oob");

    // bob's account key replaced on his instance (new proof, new list, no continuity): key-changed, and
    // a new device of "bob" under that key is refused.
    await swapAccountKey(b, "bob", resolver);
    const changed = await alice.verify("@bob@b.test");
    expect(changed.status).toBe("key-changed");
    expect(changed.wasOobVerified).toBe(true);
    const refusedNew = await alice.addMembers(groupId, ["@bob@b.test"]);
    expect(refusedNew.added).toEqual([]);
    expect(refusedNew.refused.map((r) => r.reason.split(":")[0])).toEqual(["key-changed"]);
    await alice.verifyMembers(groupId, { fresh: true });
    expect(statusOf(alice, groupId, "bob@b.test")).not.toBe("verified");
    // Pins survive a restart.
    const again = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    expect((await again.verify("@bob@b.test")).status).toBe("key-changed");
    // bob's safety number had been compared: nothing goes to the group until alice decides.
    const sentBefore = (await again.history(groupId)).length;
    await expect(again.send(groupId, "is this still you?")).rejects.toMatchObject({ code: "not_verified" });
    expect((await again.history(groupId)).length).toBe(sentBefore);
    expect((await again.acceptNewKey("@bob@b.test")).status).toBe("verified");
    await again.send(groupId, "new key accepted");
    expect((await again.history(groupId)).length).toBe(sentBefore + 1);
  }, 120_000);

  it("a token without write:accounts stops set-up with a clear error; reopening with a new token finishes it", async () => {
    const { a, resolver } = env;
    a.mastodon.createAccount({ username: "dora" });
    const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-dora-")), "device");
    const err = await MlsDmClient.create({
      dir,
      acct: "@dora@a.test",
      mastodonToken: a.mastodon.issueToken({ username: "dora", scopes: "read" }),
      protection: { kind: "none" },
      services: resolver,
      keyPackages: 1,
      retry: FAST_RETRY,
    }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("insufficient_scope");
    expect((err as Error).message).toContain("write:accounts");
    const dora = await MlsDmClient.open(dir, {
      services: resolver,
      retry: FAST_RETRY,
      mastodonToken: a.mastodon.issueToken({ username: "dora", scopes: "read write" }),
    });
    const alice = await MlsDmClient.open(aliceDir!, { services: resolver, retry: FAST_RETRY });
    expect((await alice.verify("@dora@a.test")).status).toBe("verified");
    expect((await dora.devices()).devices).toHaveLength(1);
  }, 60_000);
});
