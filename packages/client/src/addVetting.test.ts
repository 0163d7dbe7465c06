import { readFile, readdir } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { formatIdentity, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import {
  FAST_RETRY,
  newClient,
  startInstance,
  stopInstance,
  type Instance,
} from "./testSupport/instances.js";
import { localDevice } from "./testSupport/localDevices.js";
import { StaticResolver } from "./transport/resolver.js";
import { settle } from "./testSupport/settle.js";

// An add builds its commit while the new members' accounts are still being looked up, on the
// KeyPackages that passed the offline checks (groups/changes.ts, commitFresh). These tests hold the
// other half of that: what the vetting refuses never reaches the hub, whether it refuses some of the
// KeyPackages claimed (the commit is built again without them) or all of them (nothing is posted).

/** What the proxy in front of b.test's directory does to claims. */
let forging: "none" | "extra" | "only" | "other" = "none";
/** With "other": a real KeyPackage of another account's listed device, handed out in place of the asked one. */
let otherKeyPackage: { deviceId: string; keyPackage: string } | undefined;
/** Device ids of the KeyPackages it forged. */
const forged: string[] = [];
let proxy: Server | undefined;
let a: Instance;
let b: Instance;
let resolver: StaticResolver;

beforeAll(async () => {
  // b.test's directory sits behind a proxy (it checks request signatures against the proxy's origin,
  // which clients use), so a claim's answer can be changed on its way.
  let target = "";
  proxy = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const answer = await fetch(new URL(req.url!, target), {
          method: req.method!,
          headers: {
            ...(req.headers["content-type"] ? { "content-type": req.headers["content-type"] } : {}),
            ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
          },
          body: chunks.length > 0 ? Buffer.concat(chunks) : undefined,
        });
        let text = await answer.text();
        if (forging !== "none" && req.method === "POST" && req.url === "/v1/claims" && answer.ok) {
          const body = JSON.parse(text) as ClaimAnswer;
          text = JSON.stringify(forging === "other" ? swapInOther(body) : await forgeInto(body, forging));
        }
        res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "text/plain" });
        res.end(text);
      })().catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => proxy!.listen(0, "127.0.0.1", r));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  [a, b] = await Promise.all([
    startInstance("a.test"),
    startInstance("b.test", { directoryEnv: { PUBLIC_URL: proxyUrl } }),
  ]);
  target = b.urls.directory;
  resolver = new StaticResolver({
    "a.test": { ...a.urls, mastodon: a.mastodon.url },
    "b.test": { ...b.urls, directory: proxyUrl, mastodon: b.mastodon.url },
  });
});

afterAll(async () => {
  await Promise.all([a, b].filter((i) => i !== undefined).map(stopInstance));
  proxy?.closeAllConnections();
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
});

/** A KeyPackage for `acct` that passes every offline check: certified by an account key made here. */
async function forgedKeyPackage(acct: string): Promise<{ deviceId: string; keyPackage: string }> {
  const device = await localDevice(formatIdentity(parseAcct(acct)));
  return { deviceId: device.deviceId, keyPackage: toBase64url((await device.keyPackage()).encoded) };
}

interface ClaimAnswer {
  accounts: {
    acct: string;
    status: string;
    key_packages: { device_id: string; key_package: string; last_resort: boolean }[];
    exhausted: string[];
  }[];
}

/** Adds a forged KeyPackage to each account of a claim's answer ("extra"), or answers with it alone. */
async function forgeInto(body: ClaimAnswer, how: "extra" | "only"): Promise<ClaimAnswer> {
  for (const account of body.accounts) {
    const fake = await forgedKeyPackage(account.acct);
    forged.push(fake.deviceId);
    const entry = { device_id: fake.deviceId, key_package: fake.keyPackage, last_resort: false };
    account.key_packages = how === "only" ? [entry] : [...account.key_packages, entry];
    if (how === "only") account.exhausted = [];
    account.status = "ok";
  }
  return body;
}

/** Replaces every KeyPackage of a claim's answer with `otherKeyPackage` (another account's real one). */
function swapInOther(body: ClaimAnswer): ClaimAnswer {
  const other = otherKeyPackage!;
  for (const account of body.accounts) {
    forged.push(other.deviceId);
    account.key_packages = [{ device_id: other.deviceId, key_package: other.keyPackage, last_resort: false }];
    account.exhausted = [];
    account.status = "ok";
  }
  return body;
}

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

describe("an add whose KeyPackages the vetting refuses", () => {
  it("refuses another account's real device handed out for the account asked for", async () => {
    const alice = await newClient(a, "alice3", resolver, 2);
    await newClient(b, "hal", resolver, 2);
    const ivy = await newClient(b, "ivy", resolver, 2); // verified, listed: only not hal
    otherKeyPackage = { deviceId: ivy.deviceId, keyPackage: await storedKeyPackage(ivy.dir) };
    const { groupId } = await alice.createGroup([]);
    forged.length = 0;
    forging = "other";
    try {
      // The KeyPackage names ivy: refused before any lookup, whatever allowUnverified says.
      for (const allowUnverified of [false, true]) {
        const report = await alice.addMembers(groupId, ["@hal@b.test"], { allowUnverified });
        expect(report.added).toEqual([]);
        expect(report.refused).toEqual([
          {
            acct: "hal@b.test",
            deviceId: ivy.deviceId,
            reason: expect.stringMatching(/ivy@b\.test/) as string,
          },
        ]);
      }
    } finally {
      forging = "none";
    }
    expect(alice.members(groupId).map((m) => m.deviceId)).toEqual([alice.deviceId]);
  }, 60_000);

  it("adds only the devices that verify when the directory slips in a forged one, and the members agree", async () => {
    const alice = await newClient(a, "alice", resolver, 2);
    const bob = await newClient(b, "bob", resolver, 2);
    const { groupId } = await alice.createGroup([]);
    const epochBefore = alice.groups().find((g) => g.groupId === groupId)!.epoch!;
    forged.length = 0;
    forging = "extra";
    const report = await alice.addMembers(groupId, ["@bob@b.test"]).finally(() => (forging = "none"));

    expect(forged).toHaveLength(1);
    expect(report.added).toEqual([{ acct: "bob@b.test", deviceId: bob.deviceId }]);
    expect(report.refused).toHaveLength(1);
    expect(report.refused[0]).toMatchObject({ acct: "bob@b.test", deviceId: forged[0] });
    expect(report.refused[0]!.reason).toMatch(/^(invalid|revoked): /);
    // One commit: the one without the forged device (the first one built had it).
    expect(alice.groups().find((g) => g.groupId === groupId)!.epoch).toBe(epochBefore + 1);
    expect(
      alice
        .members(groupId)
        .map((m) => m.deviceId)
        .sort(),
    ).toEqual([alice.deviceId, bob.deviceId].sort());

    // bob joins from the Welcome the hub kept, into the same tree.
    await settle([bob, alice]);
    expect(bob.groups().map((g) => g.groupId)).toContain(groupId);
    expect(
      bob
        .members(groupId)
        .map((m) => m.deviceId)
        .sort(),
    ).toEqual([alice.deviceId, bob.deviceId].sort());
    await alice.send(groupId, "only you");
    await settle([bob, alice]);
    expect(
      (await bob.history(groupId)).map((h) => (h.content.kind === "activity" ? h.from : h.content.kind)),
    ).toContain("alice@a.test");
  }, 60_000);

  it("posts nothing when every KeyPackage is refused", async () => {
    const alice = await newClient(a, "alice2", resolver, 2);
    await newClient(b, "carol", resolver, 2);
    const { groupId } = await alice.createGroup([]);
    const epochBefore = alice.groups().find((g) => g.groupId === groupId)!.epoch!;
    forged.length = 0;
    forging = "only";
    const report = await alice.addMembers(groupId, ["@carol@b.test"]).finally(() => (forging = "none"));

    expect(report.added).toEqual([]);
    expect(report.refused.map((r) => r.deviceId)).toEqual(forged);
    expect(alice.groups().find((g) => g.groupId === groupId)!.epoch).toBe(epochBefore);
    expect(alice.members(groupId).map((m) => m.deviceId)).toEqual([alice.deviceId]);
    // Nor did the hub get one: the directory opened again and caught up is still at that epoch.
    const again = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    await again.sync();
    expect(again.groups().find((g) => g.groupId === groupId)!.epoch).toBe(epochBefore);
  }, 60_000);
});
