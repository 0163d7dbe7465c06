import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LookupResult } from "./acctLookup.js";
import { createAcctResolver } from "./acctResolver.js";
import { generateSigningKeyPair } from "./crypto.js";
import { deviceIdOf } from "./deviceCertificate.js";
import { signDeviceList } from "./deviceList.js";
import {
  verifyMember,
  allowsNewDevices,
  type DirectoryAccount,
  type MemberVerification,
} from "./memberStatus.js";
import { MemoryPinStore, acceptNewKey, confirmPin, type PinStore } from "./pinStore.js";
import { accountKeyFingerprint, buildProfileFieldValue } from "./profileProof.js";
import {
  NOW,
  addUserDevice,
  directoryOf,
  makeDevice,
  makeUser,
  publish,
  revokeUserDevice,
  rotateAccountKey,
  setFields,
  startWorld,
  type User,
  type World,
} from "./testSupport.js";

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => {
  await world.close();
});
afterEach(() => {
  world.a.fault("none");
  world.b.fault("none");
});

interface Check {
  pins?: PinStore;
  leaves?: User["devices"];
  directory?: DirectoryAccount | undefined;
  lookup?: LookupResult;
  knownList?: { accountKey: Uint8Array; version: number };
}

/** What a client of another user sees for `user` right now. */
async function check(user: User, c: Check = {}): Promise<MemberVerification> {
  return verifyMember({
    acct: user.acct,
    leaves: (c.leaves ?? user.devices).map((d) => d.leaf),
    lookup: c.lookup ?? (await world.lookup(user.acct)),
    directory: "directory" in c ? c.directory : directoryOf(user),
    pins: c.pins ?? new MemoryPinStore(),
    ...(c.knownList === undefined ? {} : { knownList: c.knownList }),
    now: NOW,
  });
}

/** Writes the MLS field directly, optionally tampered with, as an admin editing the profile could. */
async function setField(user: User, version: number, tamper: (parts: string[]) => string[] = (p) => p) {
  const value = await buildProfileFieldValue({
    identity: user.identity,
    accountKey: user.accountKey,
    deviceListVersion: version,
  });
  await setFields(user, [{ name: "MLS", value: tamper(value.split(".")).join(".") }]);
}

describe("verification status of a member", () => {
  it("MV-18: verified when profile, list and certificates agree; MV-13 pins on first use", async () => {
    const bob = await makeUser(world.b, "bob", 2);
    const pins = new MemoryPinStore();
    const first = await check(bob, { pins });
    expect(first).toMatchObject({ status: "verified", rule: "MV-18", pin: "first-use" });
    expect(first.leaves.map((l) => l.state)).toEqual(["ok", "ok"]);
    expect((await pins.get(bob.acct))?.accountKey).toEqual(bob.accountKey.publicKey);
    expect(await check(bob, { pins })).toMatchObject({ status: "verified", pin: "same" });
    expect(allowsNewDevices("verified")).toBe(true);
  });

  it("MV-18: verified-oob once safety numbers were compared for the pinned key", async () => {
    const cal = await makeUser(world.a, "cal");
    const pins = new MemoryPinStore();
    await check(cal, { pins });
    expect(await confirmPin(pins, cal.acct, (await generateSigningKeyPair()).publicKey)).toBe(false);
    expect(await confirmPin(pins, cal.acct, cal.accountKey.publicKey)).toBe(true);
    expect(await check(cal, { pins })).toMatchObject({ status: "verified-oob", rule: "MV-18" });
  });

  it("MV-11, MV-12: a tampered fingerprint, version or signature is invalid", async () => {
    const dan = await makeUser(world.a, "dan");
    const otherFp = accountKeyFingerprint((await generateSigningKeyPair()).publicKey);
    const flip = (sig: string) => `${sig.slice(0, 40)}${sig[40] === "A" ? "B" : "A"}${sig.slice(41)}`;
    const tampers: Array<[string, (p: string[]) => string[], string]> = [
      ["fingerprint", (p) => [p[0]!, otherFp, p[2]!, p[3]!], "MV-11"],
      ["version", (p) => [p[0]!, p[1]!, "2", p[3]!], "MV-12"],
      ["signature", (p) => [p[0]!, p[1]!, p[2]!, flip(p[3]!)], "MV-12"],
    ];
    for (const [what, tamper, rule] of tampers) {
      await setField(dan, 1, tamper);
      expect([what, (await check(dan)).status, (await check(dan)).rule]).toEqual([what, "invalid", rule]);
    }
    await setField(dan, 1);
    expect((await check(dan)).status).toBe("verified");
  });

  it("MV-10, MV-11: a proof copied onto another account does not verify for it", async () => {
    const eli = await makeUser(world.a, "eli");
    const mal = await makeUser(world.a, "mal");
    await setFields(mal, [{ name: "MLS", value: await fieldValue(eli) }]);
    // With mal's own list: the profile names eli's key, the directory mal's.
    expect(await check(mal)).toMatchObject({ status: "invalid", rule: "MV-11" });
    // With eli's list served as mal's: it is for another account.
    expect(await check(mal, { directory: directoryOf(eli) })).toMatchObject({
      status: "invalid",
      rule: "MV-10",
    });
  });

  it("MV-1: a certificate for another acct, or an expired one, is invalid offline", async () => {
    const fin = await makeUser(world.a, "fin");
    const forOther = await makeDevice(fin.identity, fin.accountKey, { certIdentity: "acct:mal@a.test" });
    const expired = await makeDevice(fin.identity, fin.accountKey, {
      notBefore: NOW - 90 * 86400,
      notAfter: NOW - 1,
    });
    for (const bad of [forOther, expired]) {
      // Even with the instance down: offline checks need no network.
      world.a.fault("reset");
      const r = await check(fin, { leaves: [fin.devices[0]!, bad] });
      expect(r).toMatchObject({ status: "invalid", rule: "MV-1" });
      expect(r.leaves.map((l) => l.state)).toEqual(["unchecked", "invalid"]);
      expect(allowsNewDevices(r.status)).toBe(false);
    }
  });

  it("MV-16: a device missing from the current list is revoked", async () => {
    const gia = await makeUser(world.a, "gia", 2);
    const leaves = [...gia.devices];
    await revokeUserDevice(gia, gia.devices[1]!);
    await publish(gia, 2);
    const r = await check(gia, { leaves });
    expect(r).toMatchObject({ status: "revoked", rule: "MV-16" });
    expect(r.leaves.map((l) => l.state)).toEqual(["ok", "revoked"]);
  });

  it("MV-15, MV-9: a directory serving an older list than the profile names, or none, is stale", async () => {
    const hal = await makeUser(world.a, "hal", 2);
    const v1 = hal.listBytes;
    await revokeUserDevice(hal, hal.devices[1]!);
    await publish(hal, 2);
    // The directory withholds the revocation: the profile's version gives it away.
    expect(await check(hal, { directory: { deviceList: v1, keyRotations: [] } })).toMatchObject({
      status: "stale",
      rule: "MV-15",
    });
    expect(await check(hal, { directory: { deviceList: null, keyRotations: [] } })).toMatchObject({
      status: "stale",
      rule: "MV-9",
    });
  });

  it("MV-17: a list newer than the profile is stale until the profile catches up; MV-16 revocations count at once", async () => {
    const ivy = await makeUser(world.a, "ivy", 2);
    const leaves = [...ivy.devices];
    await addUserDevice(ivy); // list v2, profile still v1
    expect(await check(ivy)).toMatchObject({ status: "stale", rule: "MV-17" });
    await revokeUserDevice(ivy, leaves[1]!); // v3, profile still v1
    expect(await check(ivy, { leaves })).toMatchObject({ status: "revoked", rule: "MV-16" });
    await publish(ivy, 3);
    expect(await check(ivy, { leaves: [leaves[0]!] })).toMatchObject({ status: "verified" });
  });

  it("MV-13, MV-14: a rotated account key with a continuity statement is followed and re-pinned", async () => {
    const jo = await makeUser(world.a, "jo", 2);
    const pins = new MemoryPinStore();
    await check(jo, { pins });
    await confirmPin(pins, jo.acct, jo.accountKey.publicKey);
    await rotateAccountKey(jo, true);
    // The leaves still carry certificates from the old key; the chain vouches for them too.
    const r = await check(jo, { pins });
    expect(r).toMatchObject({ status: "verified", pin: "rotated", wasOobVerified: true });
    expect(r.reason).toMatch(/rotated/);
    expect((await pins.get(jo.acct))?.accountKey).toEqual(jo.accountKey.publicKey);
    expect((await pins.get(jo.acct))?.oobVerified).toBe(false);
  });

  it("MV-13: a rotated account key without a continuity statement is key-changed, and the pin stays", async () => {
    const kai = await makeUser(world.a, "kai");
    const pins = new MemoryPinStore();
    await check(kai, { pins });
    const pinned = (await pins.get(kai.acct))!.accountKey;
    await rotateAccountKey(kai, false);
    const r = await check(kai, { pins });
    expect(r).toMatchObject({ status: "key-changed", rule: "MV-13", pin: "mismatch" });
    expect((await pins.get(kai.acct))!.accountKey).toEqual(pinned);
    expect(allowsNewDevices(r.status)).toBe(false);
    // After checking with the person, the user accepts the new key; it is pinned but not confirmed.
    await acceptNewKey(pins, kai.acct, kai.accountKey.publicKey, NOW);
    expect(await check(kai, { pins, leaves: [] })).toMatchObject({ status: "verified", pin: "same" });
  });

  it("MV-13: the home admin swapping in their own key is key-changed for a pinned peer (and accepted by one who never pinned)", async () => {
    const lou = await makeUser(world.a, "lou");
    const pins = new MemoryPinStore();
    await check(lou, { pins });
    await confirmPin(pins, lou.acct, lou.accountKey.publicKey);
    // The admin (who runs the instance and its directory) makes a key, a device, a list and a profile proof.
    const adminKey = await generateSigningKeyPair();
    const adminDevice = await makeDevice(lou.identity, adminKey);
    const forged = await signDeviceList(
      {
        identity: lou.identity,
        accountKey: adminKey.publicKey,
        version: 2,
        devices: [
          {
            deviceId: deviceIdOf(adminDevice.keys.publicKey),
            sigKey: adminDevice.keys.publicKey,
            name: "x",
            addedAt: NOW,
          },
        ],
        issuedAt: NOW,
      },
      adminKey,
    );
    await setFields(lou, [
      {
        name: "MLS",
        value: await buildProfileFieldValue({
          identity: lou.identity,
          accountKey: adminKey,
          deviceListVersion: 2,
        }),
      },
    ]);
    const directory = { deviceList: forged, keyRotations: [] };
    const pinnedView = await check(lou, { pins, leaves: [adminDevice], directory });
    expect(pinnedView).toMatchObject({ status: "key-changed", wasOobVerified: true });
    // The threat model, stated as a test: someone who never pinned lou's key cannot tell.
    expect(await check(lou, { leaves: [adminDevice], directory })).toMatchObject({
      status: "verified",
      pin: "first-use",
    });
  });

  it("MV-14, MV-11: a device certified by a key the directory made is invalid; so is the directory's own list", async () => {
    const max = await makeUser(world.a, "max");
    const dirKey = await generateSigningKeyPair();
    const planted = await makeDevice(max.identity, dirKey);
    const r = await check(max, { leaves: [max.devices[0]!, planted] });
    expect(r).toMatchObject({ status: "invalid", rule: "MV-14" });
    expect(r.leaves.map((l) => l.state)).toEqual(["unchecked", "invalid"]);
    // The directory also serves a list of its own, at the profile's version or past it.
    for (const [version, status] of [
      [1, "invalid"],
      [5, "stale"],
    ] as const) {
      const list = await signDeviceList(
        { identity: max.identity, accountKey: dirKey.publicKey, version, devices: [], issuedAt: NOW },
        dirKey,
      );
      expect(await check(max, { directory: { deviceList: list, keyRotations: [] } })).toMatchObject({
        status,
        rule: "MV-11",
      });
    }
  });

  it("MV-10, MV-12: a malformed list, or one whose signature is broken", async () => {
    const ned = await makeUser(world.a, "ned");
    const broken = ned.listBytes.slice();
    broken[broken.length - 1] = broken[broken.length - 1]! ^ 1;
    expect(await check(ned, { directory: { deviceList: broken, keyRotations: [] } })).toMatchObject({
      status: "invalid",
      rule: "MV-12",
    });
    expect(
      await check(ned, { directory: { deviceList: new Uint8Array(5), keyRotations: [] } }),
    ).toMatchObject({
      status: "invalid",
      rule: "MV-10",
    });
  });

  it("MV-19: a list older than one the verifier signed itself (knownList) is stale, under that key only", async () => {
    const fay = await makeUser(world.a, "fay", 2);
    const key = fay.accountKey.publicKey;
    // The device holding fay's key signed version 2; the directory and profile still say version 1.
    expect(await check(fay, { knownList: { accountKey: key, version: 2 } })).toMatchObject({
      status: "stale",
      rule: "MV-19",
    });
    expect(await check(fay, { knownList: { accountKey: key, version: 1 } })).toMatchObject({
      status: "verified",
    });
    const other = (await generateSigningKeyPair()).publicKey;
    expect(await check(fay, { knownList: { accountKey: other, version: 9 } })).toMatchObject({
      status: "verified",
    });
  });

  it("MV-2…MV-8: unreachable, inconsistent, gone, suspended, moved, no proof, directory down", async () => {
    const ola = await makeUser(world.a, "ola");
    world.a.fault("html502");
    expect(await check(ola)).toMatchObject({ status: "unreachable", rule: "MV-2" });
    world.a.fault("none");
    expect(await check(ola, { directory: undefined })).toMatchObject({ status: "unreachable", rule: "MV-8" });

    const mls = await fieldValue(ola);
    await setFields(ola, [
      { name: "MLS", value: mls },
      { name: "MLS", value: mls },
    ]);
    expect(await check(ola)).toMatchObject({ status: "invalid", rule: "MV-3" });
    await setFields(ola, [{ name: "Site", value: "https://ola.example" }]);
    expect(await check(ola)).toMatchObject({ status: "no-proof", rule: "MV-7" });

    const pat = await makeUser(world.a, "pat");
    world.a.move(pat.username, "pat@b.test");
    expect(await check(pat)).toMatchObject({ status: "moved", rule: "MV-6", movedTo: "pat@b.test" });
    const quy = await makeUser(world.a, "quy");
    world.a.suspend(quy.username);
    expect(await check(quy)).toMatchObject({ status: "suspended", rule: "MV-5" });
    world.a.deleteAccount(quy.username);
    expect(await check(quy)).toMatchObject({ status: "gone", rule: "MV-4" });
  });

  it("ST-3 with MV-18: the last good profile keeps a member verified while the instance is down", async () => {
    const rex = await makeUser(world.a, "rex");
    const resolver = createAcctResolver({ allowInsecureLoopback: true, resolveOrigin: world.resolveOrigin });
    await resolver.lookup(rex.acct);
    world.a.fault("reset");
    resolver.forget(rex.acct);
    const r = await check(rex, { lookup: await resolver.lookup(rex.acct) });
    expect(r).toMatchObject({ status: "verified", fromLastGood: true });
  });
});

async function fieldValue(user: User): Promise<string> {
  return buildProfileFieldValue({
    identity: user.identity,
    accountKey: user.accountKey,
    deviceListVersion: user.list.version,
  });
}
