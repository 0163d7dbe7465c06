import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { FAST_RETRY, newClient, useProxiedDirectory } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// MV-19 (found by an audit): a member's home instance and directory replaying an OLD device list and the
// proof of that time — both validly signed, both public — un-revoked a device (the account's own device
// re-added it, and others showed it `verified`), or made a listed device look revoked (others removed
// it). Each verified list's version is now kept with the pin, and an older one is `stale`.

const env = useProxiedDirectory();
const { proxy } = env;
/** user → what b.test's admin serves instead of the current answers. */
const rollback = new Map<string, { devices: unknown; claim?: unknown }>();

beforeAll(() => {
  proxy.intercept = (req) => {
    const m = /^\/v1\/accounts\/([a-z0-9_]+)(%40|@)b\.test\/devices$/.exec(req.path);
    const r = m === null ? undefined : rollback.get(m[1]!);
    if (req.method === "GET" && r !== undefined) return { status: 200, body: r.devices };
    const claim = rollback.get("bob")?.claim;
    const forBob = req.body.toString("utf8").includes('"bob@b.test"');
    if (req.method === "POST" && req.path === "/v1/claims" && claim !== undefined && forBob) {
      return { status: 200, body: claim };
    }
    return undefined;
  };
});

async function mlsField(token: string): Promise<string> {
  const me = (await (
    await fetch(`${env.b.mastodon.url}/api/v1/accounts/verify_credentials`, {
      headers: { authorization: `Bearer ${token}` },
    })
  ).json()) as { source: { fields: { name: string; value: string }[] } };
  return me.source.fields.find((f) => f.name === "MLS")!.value;
}

async function putField(token: string, value: string): Promise<void> {
  const res = await fetch(`${env.b.mastodon.url}/api/v1/accounts/update_credentials`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ fields_attributes: [{ name: "MLS", value }] }),
  });
  expect(res.status).toBe(200);
}

async function restoreAs(user: string, from: MlsDmClient, token: string): Promise<MlsDmClient> {
  const { text } = await from.backupAccountKey({ passphrase: `${user} backup`, insecureTestKdf: true });
  return MlsDmClient.restore({
    dir: join(await mkdtemp(join(tmpdir(), `mls-dm-${user}2-`)), "device"),
    protection: { kind: "none" },
    backup: text,
    secret: `${user} backup`,
    mastodonToken: token,
    services: env.resolver,
    keyPackages: 3,
    deviceName: `${user}'s phone`,
    retry: FAST_RETRY,
    insecureTestKdf: true,
  });
}

describe("MV-19: an old (list, proof) pair replayed by the account's home instance", () => {
  it("does not bring a revoked device back into groups", { timeout: 120_000 }, async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver, 3);
    const bob = await newClient(b, "bob", resolver, 3);
    const bobToken = b.mastodon.issueToken({ username: "bob", scopes: "read write" });
    const bob2 = await restoreAs("bob", bob, bobToken);
    const devicesV2: unknown = await (
      await fetch(`${b.urls.directory}/v1/accounts/bob%40b.test/devices`)
    ).json();
    const fieldV2 = await mlsField(bobToken);

    const { groupId } = await alice.createGroup(["@bob@b.test"]);
    await settle([alice, bob, bob2]);
    expect(alice.members(groupId).map((m) => m.deviceId)).toContain(bob2.deviceId);

    expect(await bob.revokeDevice(bob2.deviceId)).toMatchObject({ version: 3, removedFrom: [groupId] });
    await settle([alice, bob]);
    expect(alice.members(groupId).map((m) => m.deviceId)).not.toContain(bob2.deviceId);
    // alice's next verification of the group sees list version 3.
    await alice.verifyMembers(groupId, { fresh: true });

    // bob's instance puts the v2 proof back, his directory serves the v2 list and a KeyPackage of the phone.
    await putField(bobToken, fieldV2);
    let keyPackage = "";
    for (const f of await readdir(join(bob2.dir, "keypackages"))) {
      const rec = JSON.parse(await readFile(join(bob2.dir, "keypackages", f), "utf8")) as {
        keyPackage?: string;
        lastResort?: boolean;
      };
      if (rec.keyPackage !== undefined && rec.lastResort === false) keyPackage = rec.keyPackage;
    }
    rollback.set("bob", {
      devices: devicesV2,
      claim: {
        accounts: [
          {
            acct: "bob@b.test",
            status: "ok",
            key_packages: [{ device_id: bob2.deviceId, key_package: keyPackage, last_resort: false }],
            exhausted: [],
          },
        ],
      },
    });

    const bobAgain = await MlsDmClient.open(bob.dir, { services: resolver, retry: FAST_RETRY });
    await bobAgain.sync();
    await alice.sync();
    const checked = await alice.verifyMembers(groupId, { fresh: true });
    expect(alice.members(groupId).map((m) => m.deviceId)).not.toContain(bob2.deviceId);
    expect(checked.find((m) => m.acct === "bob@b.test")?.status).toBe("stale");
    expect((await alice.verify("@bob@b.test")).reason).toMatch(
      /older than version 3, already seen: a rollback/,
    );
  });

  it("does not make members remove a device the current list names", { timeout: 120_000 }, async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice2", resolver, 3);
    const dave = await newClient(b, "dave", resolver, 3);
    const daveToken = b.mastodon.issueToken({ username: "dave", scopes: "read write" });
    const devicesV1: unknown = await (
      await fetch(`${b.urls.directory}/v1/accounts/dave%40b.test/devices`)
    ).json();
    const fieldV1 = await mlsField(daveToken);
    const dave2 = await restoreAs("dave", dave, daveToken);
    const { groupId } = await alice.createGroup(["@dave@b.test"]);
    await settle([alice, dave, dave2]);
    expect(alice.members(groupId).map((m) => m.deviceId)).toContain(dave2.deviceId);

    await putField(daveToken, fieldV1);
    rollback.set("dave", { devices: devicesV1 });
    const aliceAgain = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const events = await aliceAgain.sync();
    await aliceAgain.sync();
    expect(events.filter((e) => e.type === "invalid_member")).toEqual([]);
    expect(aliceAgain.members(groupId).map((m) => m.deviceId)).toContain(dave2.deviceId);
  });
});

describe("MV-19 on the account's own device (the account key is trusted above the home instance)", () => {
  it(
    "an old (list, proof) pair is stale to the device that signed a newer list, before it verified that one",
    { timeout: 120_000 },
    async () => {
      const { b, resolver } = env;
      const erin = await newClient(b, "erin", resolver, 3);
      const erinToken = b.mastodon.issueToken({ username: "erin", scopes: "read write" });
      const erin2 = await restoreAs("erin", erin, erinToken);
      const devicesV2: unknown = await (
        await fetch(`${b.urls.directory}/v1/accounts/erin%40b.test/devices`)
      ).json();
      const fieldV2 = await mlsField(erinToken);

      // erin revokes her phone (version 3, signed on this device); her home instance and directory then
      // replay version 2, which names the phone, before this device ever verified version 3.
      expect(await erin.revokeDevice(erin2.deviceId)).toMatchObject({ version: 3 });
      await putField(erinToken, fieldV2);
      rollback.set("erin", { devices: devicesV2 });

      const seen = await erin.verify("@erin@b.test");
      expect(seen.status).toBe("stale");
      expect(seen.reason).toMatch(/older than version 3/);
    },
  );
});
