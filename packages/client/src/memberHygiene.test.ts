import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { DeviceStore } from "./store/deviceStore.js";
import { FAST_RETRY, newClient, useTwoInstances, type Instance } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// DESIGN §3 in groups, through the library against real directories and hubs: an account's devices are
// kept in every group (a linked device is added by the account's other device on its own, without
// `addOwnDevices`), and a device that its verified account disowns — revoked from the list by a device
// not in the group — is removed by the other members' background verification.

const env = useTwoInstances();

/** A second device of `first`'s account, linked the way `mls-dm link-device` does it. */
async function link(first: MlsDmClient, instance: Instance, username: string): Promise<MlsDmClient> {
  const token = instance.mastodon.issueToken({ username, scopes: "read write" });
  const dir = join(await mkdtemp(join(tmpdir(), `mls-dm-${username}-linked-`)), "device");
  const store = await DeviceStore.create(dir, { kind: "none" });
  const setup = { acct: first.acct, mastodonToken: token, deviceName: "second", keyPackages: 2 };
  const pending = await MlsDmClient.beginLink(store, setup);
  // A mistyped confirmation changes nothing; the right one publishes the list and the certificate.
  await expect(first.approveLink(pending.code, "1111-2222-3333")).rejects.toMatchObject({
    code: "bad_link_code",
  });
  expect((await first.devices()).devices).toHaveLength(1);
  const approval = await first.approveLink(pending.code, pending.confirmation);
  expect(approval).toMatchObject({ deviceId: pending.deviceId, listed: true });
  // Approving the same code again is harmless (an approval cut short is finished this way).
  expect(await first.approveLink(pending.code, pending.confirmation)).toMatchObject({
    deviceId: pending.deviceId,
    listed: false,
    version: approval.version,
  });
  const second = await MlsDmClient.finishLink(
    store,
    { ...setup, services: env.resolver, retry: FAST_RETRY },
    { timeoutMs: 30_000, pollMs: 100 },
  );
  expect(second.deviceId).toBe(pending.deviceId);
  expect(second.holdsAccountKey).toBe(false);
  return second;
}

describe("member hygiene", () => {
  it(
    "keeps an account's linked device in every group, and removes a device its account disowns",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice", resolver);
      const bob = await newClient(b, "bob", resolver);
      const { groupId } = await alice.createGroup(["@bob@b.test"]);
      await settle([alice, bob]);

      // bob links a phone; bob's next sync adds it to the group, no one asked it to.
      const phone = await link(bob, b, "bob");
      const events = await settle([bob, phone, alice]);
      expect(events.get(phone)!.some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
      expect(alice.members(groupId).filter((m) => m.acct === "bob@b.test")).toHaveLength(2);
      await phone.send(groupId, "from bob's phone");
      await settle([alice, bob, phone]);
      expect((await alice.history(groupId)).map((h) => h.from)).toContain("bob@b.test");

      // A backup of bob's key restored on a device that is not in the group revokes the phone. bob's
      // first device is not running; alice's background verification finds the phone disowned by bob's
      // verified list and removes it.
      const backup = await bob.backupAccountKey({ passphrase: "bob's long backup passphrase" });
      const restored = await MlsDmClient.restore({
        dir: join(await mkdtemp(join(tmpdir(), "mls-dm-bob-restored-")), "device"),
        protection: { kind: "none" },
        backup: backup.text,
        secret: "bob's long backup passphrase",
        mastodonToken: b.mastodon.issueToken({ username: "bob", scopes: "read write" }),
        services: resolver,
        keyPackages: 1,
        retry: FAST_RETRY,
      });
      await restored.revokeDevice(phone.deviceId);
      // Background verification reuses directory answers for up to a minute: a fresh look (or the minute
      // passing) shows the phone revoked without acting on it yet …
      const looked = await alice.verifyMembers(groupId, { fresh: true });
      expect(looked.find((m) => m.deviceId === phone.deviceId)?.status).toBe("revoked");
      // … and the next sync's verification removes it.
      const seen = await alice.sync();
      expect(seen).toContainEqual(
        expect.objectContaining({
          type: "invalid_member",
          groupId,
          acct: "bob@b.test",
          deviceId: phone.deviceId,
        }),
      );
      expect(alice.members(groupId).map((m) => m.deviceId)).not.toContain(phone.deviceId);
      const phoneEvents = await settle([phone]);
      expect(phoneEvents.get(phone)!.map((e) => e.type)).toContain("removed_from_group");
      // bob's first device, back, adds the restored device (in bob's list now; its background
      // verification would within the minute its directory answers are reused); all three agree.
      await settle([bob]);
      expect(await bob.addOwnDevices()).toEqual([{ groupId, added: [restored.deviceId], refused: [] }]);
      const back = await settle([alice, bob, restored]);
      expect(back.get(restored)!.some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
      expect(bob.epochAuthenticator(groupId)).toBe(alice.epochAuthenticator(groupId));
      expect(restored.epochAuthenticator(groupId)).toBe(alice.epochAuthenticator(groupId));
    },
  );

  it(
    "rotates an account key: peers follow the continuity statement, linked devices go on, the old backup is void",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver } = env;
      const amy = await newClient(a, "amy", resolver);
      const ben = await newClient(b, "ben", resolver);
      const { groupId } = await amy.createGroup(["@ben@b.test"]);
      await settle([amy, ben]);
      const compared = await ben.verify("@amy@a.test");
      expect(
        (await ben.confirmSafetyNumber("@amy@a.test", { typed: compared.safetyNumber!.text })).status,
      ).toBe("verified-oob");
      const phone = await link(amy, a, "amy");
      await settle([amy, phone, ben]);
      const oldBackup = await amy.backupAccountKey({ passphrase: "amy's long backup passphrase" });
      const before = (await amy.devices()).version;

      const rotation = await amy.rotateAccountKey();
      expect(rotation.version).toBe(before + 1);
      expect((await amy.devices()).devices.map((d) => d.deviceId).sort()).toEqual(
        [amy.deviceId, phone.deviceId].sort(),
      );
      // ben pinned the old key and had compared safety numbers: he follows the statement (verified; the
      // comparison was of the old key, so it does not carry over) instead of seeing key-changed.
      const followed = await ben.verify("@amy@a.test");
      expect(followed.status).toBe("verified");
      expect(followed.accountKey).toBe(rotation.accountKey);
      expect(followed.safetyNumber!.text).not.toBe(compared.safetyNumber!.text);
      const members = await ben.verifyMembers(groupId, { fresh: true });
      expect(members.filter((m) => m.acct === "amy@a.test").map((m) => m.status)).toEqual([
        "verified",
        "verified",
      ]);
      // Devices certified under the old key go on: the phone writes, ben reads; ben is not blocked.
      await phone.send(groupId, "after the rotation");
      await ben.send(groupId, "still here");
      await settle([amy, phone, ben]);
      expect((await ben.history(groupId)).map((h) => h.from)).toContain("amy@a.test");
      expect((await phone.history(groupId)).map((h) => h.from)).toContain("ben@b.test");
      // The backup of the old key restores nothing now.
      await expect(
        MlsDmClient.restore({
          dir: join(await mkdtemp(join(tmpdir(), "mls-dm-amy-old-")), "device"),
          protection: { kind: "none" },
          backup: oldBackup.text,
          secret: "amy's long backup passphrase",
          mastodonToken: a.mastodon.issueToken({ username: "amy", scopes: "read write" }),
          services: resolver,
          keyPackages: 1,
          retry: FAST_RETRY,
        }),
      ).rejects.toMatchObject({ code: "device_list_conflict" });
    },
  );
});
