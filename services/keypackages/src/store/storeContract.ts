import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type {
  AccountClaim,
  DeviceRecord,
  DirectoryStore,
  StoreLimits,
  StoredKeyPackage,
} from "./directoryStore.js";

// One behavioural contract, run against every DirectoryStore. The store trusts its caller to have
// verified what it stores, so these tests use synthetic bytes: they are about bookkeeping, not MLS.

export interface StoreUnderTest {
  store: DirectoryStore;
  /** Further handles on the same data (other Redis connections), for races; [store] when there are none. */
  peers: DirectoryStore[];
  cleanup(): Promise<void>;
}

export type StoreFactory = (limits: Partial<StoreLimits>) => Promise<StoreUnderTest>;

const NOW = 1_800_000_000;
const DAY = 86_400;

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");

function device(acct: string, over: Partial<DeviceRecord> = {}): DeviceRecord {
  const sigKey = new Uint8Array(randomBytes(32));
  return {
    acct,
    deviceId: text(new Uint8Array(randomBytes(32))).slice(0, 43),
    certificate: new Uint8Array(randomBytes(180)),
    sigKey,
    registeredAt: NOW,
    ...over,
  };
}

function kp(notAfter = NOW + 30 * DAY): StoredKeyPackage {
  return {
    ref: text(new Uint8Array(randomBytes(32))),
    keyPackage: new Uint8Array(randomBytes(300)),
    notAfter,
  };
}

export function describeStoreContract(name: string, factory: StoreFactory): void {
  describe(`DirectoryStore contract: ${name}`, () => {
    let sut: StoreUnderTest;
    let store: DirectoryStore;
    beforeEach(async () => {
      sut = await factory({ devicesPerAccount: 3, keyPackagesPerDevice: 30 });
      store = sut.store;
    });
    afterEach(async () => {
      await sut.cleanup();
    });

    async function registered(acct = "alice@a.test"): Promise<DeviceRecord> {
      const d = device(acct);
      expect(await store.putDevice(d)).toBe("created");
      return d;
    }

    describe("devices", () => {
      it("registers, is idempotent for the same certificate, and replaces only with the same key", async () => {
        const d = await registered();
        expect(await store.putDevice({ ...d, registeredAt: NOW + 5 })).toBe("unchanged");
        const renewed = { ...d, certificate: new Uint8Array(randomBytes(180)), registeredAt: NOW + 10 };
        expect(await store.putDevice(renewed)).toBe("replaced");
        const got = await store.getDevice(d.acct, d.deviceId);
        expect(got?.certificate).toEqual(renewed.certificate);
        expect(got?.sigKey).toEqual(d.sigKey);
        expect(got?.registeredAt).toBe(NOW);
        const otherKey = { ...d, sigKey: new Uint8Array(randomBytes(32)), certificate: new Uint8Array(9) };
        expect(await store.putDevice(otherKey)).toBe("key_mismatch");
        expect((await store.getDevice(d.acct, d.deviceId))?.certificate).toEqual(renewed.certificate);
      });

      it("enforces the per-account device limit, per account", async () => {
        const first = await registered();
        await registered();
        await registered();
        expect(await store.putDevice(device("alice@a.test"))).toBe("device_limit");
        // A device already registered may still be renewed at the limit; other accounts are unaffected.
        expect(await store.putDevice({ ...first, certificate: new Uint8Array(7) })).toBe("replaced");
        expect(await store.putDevice(device("bob@a.test"))).toBe("created");
        expect(await store.listDevices("alice@a.test")).toHaveLength(3);
      });

      it("lists an account's devices oldest first, and no one else's", async () => {
        const later = device("alice@a.test", { registeredAt: NOW + 100 });
        const earlier = device("alice@a.test", { registeredAt: NOW });
        await store.putDevice(later);
        await store.putDevice(earlier);
        await store.putDevice(device("bob@a.test"));
        const list = await store.listDevices("alice@a.test");
        expect(list.map((d) => d.deviceId)).toEqual([earlier.deviceId, later.deviceId]);
        expect(list[0]).toEqual(earlier);
        expect(await store.listDevices("carol@a.test")).toEqual([]);
        expect(await store.getDevice("bob@a.test", earlier.deviceId)).toBeUndefined();
      });
    });

    describe("device lists", () => {
      const bytes = (n = 200) => new Uint8Array(randomBytes(n));
      const seenOf = (devices: DeviceRecord[]) =>
        devices.map((d) => ({ deviceId: d.deviceId, certificate: d.certificate }));

      it("stores a first list, replaces it only with a higher version from the version checked, and never rolls back", async () => {
        expect(await store.getDeviceList("alice@a.test")).toBeUndefined();
        const v1 = bytes();
        const put = (expectedVersion: number, version: number, list: Uint8Array) =>
          store.putDeviceList("alice@a.test", { expectedVersion, version, list, seen: [], remove: [] });
        expect(await put(1, 1, v1)).toBe("changed"); // there is no version 1 yet
        expect(await put(0, 1, v1)).toBe("ok");
        expect(await store.getDeviceList("alice@a.test")).toEqual({ list: v1, version: 1, rotations: [] });
        const v3 = bytes();
        expect(await put(0, 3, v3)).toBe("changed"); // checked against "no list": someone else won
        expect(await put(1, 1, bytes())).toBe("changed"); // not higher
        expect(await put(1, 3, v3)).toBe("ok");
        expect(await put(1, 2, bytes())).toBe("changed"); // checked against v1, which is gone: no rollback
        expect(await store.getDeviceList("alice@a.test")).toEqual({ list: v3, version: 3, rotations: [] });
        expect(await store.getDeviceList("bob@a.test")).toBeUndefined();
      });

      it("keeps at most the configured number of continuity statements, oldest first", async () => {
        const statements = Array.from({ length: 18 }, () => bytes(120));
        for (const [i, rotation] of statements.entries()) {
          const r = await store.putDeviceList("alice@a.test", {
            expectedVersion: i,
            version: i + 1,
            list: bytes(),
            rotation,
            seen: [],
            remove: [],
          });
          expect(r).toBe("ok");
        }
        await store.putDeviceList("alice@a.test", {
          expectedVersion: 18,
          version: 19,
          list: bytes(),
          seen: [],
          remove: [],
        });
        const stored = await store.getDeviceList("alice@a.test");
        expect(stored?.version).toBe(19);
        expect(stored?.rotations).toEqual(statements.slice(2));
      });

      it("removes the registrations and KeyPackages of removed devices in the same step, others untouched", async () => {
        const kept = await registered();
        const gone = await registered();
        const lr = kp();
        await store.addKeyPackages(kept.acct, kept.deviceId, { keyPackages: [kp()] }, NOW);
        await store.addKeyPackages(
          gone.acct,
          gone.deviceId,
          { keyPackages: [kp(), kp()], lastResort: lr },
          NOW,
        );
        const seen = seenOf(await store.listDevices("alice@a.test"));
        expect(
          await store.putDeviceList("alice@a.test", {
            expectedVersion: 0,
            version: 1,
            list: bytes(),
            seen,
            remove: [gone.deviceId],
          }),
        ).toBe("ok");
        expect((await store.listDevices("alice@a.test")).map((d) => d.deviceId)).toEqual([kept.deviceId]);
        expect(await store.getDevice("alice@a.test", gone.deviceId)).toBeUndefined();
        expect(await store.countKeyPackages(gone.acct, gone.deviceId, NOW)).toEqual({
          count: 0,
          lastResort: false,
        });
        expect(await store.claim(gone.acct, gone.deviceId, undefined, NOW)).toBeUndefined();
        expect((await store.claim(kept.acct, kept.deviceId, undefined, NOW))?.lastResort).toBe(false);
        // A removed device that comes back (in a later list) starts empty.
        expect(await store.putDevice(gone, { listVersion: 1 })).toBe("created");
        expect(await store.countKeyPackages(gone.acct, gone.deviceId, NOW)).toEqual({
          count: 0,
          lastResort: false,
        });
      });

      it("changes nothing when the registrations are no longer those the caller decided on", async () => {
        const first = await registered();
        const seen = seenOf(await store.listDevices("alice@a.test"));
        const late = await registered(); // registered after the caller looked
        const replace = (s: typeof seen) =>
          store.putDeviceList("alice@a.test", {
            expectedVersion: 0,
            version: 1,
            list: bytes(),
            seen: s,
            remove: [],
          });
        expect(await replace(seen)).toBe("changed");
        const renewed = { ...first, certificate: bytes(180) };
        expect(await store.putDevice(renewed)).toBe("replaced");
        const both = [{ deviceId: first.deviceId, certificate: first.certificate }, ...seenOf([late])];
        expect(await replace(both)).toBe("changed"); // first's certificate changed meanwhile
        expect(await store.getDeviceList("alice@a.test")).toBeUndefined();
        expect(await replace(seenOf(await store.listDevices("alice@a.test")))).toBe("ok");
      });

      it("refuses a registration or an upload checked against another list version", async () => {
        const d = await registered();
        expect(await store.putDevice(device("alice@a.test"), { listVersion: 1 })).toBe("list_changed");
        expect(
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW, { listVersion: 1 }),
        ).toEqual({ ok: false, reason: "list_changed" });
        expect(
          await store.addKeyPackages("nobody@a.test", d.deviceId, { keyPackages: [kp()] }, NOW, {
            listVersion: 2,
          }),
        ).toEqual({ ok: false, reason: "list_changed" });
        await store.putDeviceList("alice@a.test", {
          expectedVersion: 0,
          version: 1,
          list: bytes(),
          seen: seenOf([d]),
          remove: [],
        });
        expect(await store.putDevice(device("alice@a.test"), { listVersion: 0 })).toBe("list_changed");
        expect(
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW, { listVersion: 0 }),
        ).toEqual({ ok: false, reason: "list_changed" });
        expect(await store.putDevice(device("alice@a.test"), { listVersion: 1 })).toBe("created");
        expect(
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW, { listVersion: 1 }),
        ).toMatchObject({ ok: true, stored: 1 });
      });

      it("lets exactly one of many concurrent replacements of the same version win", async () => {
        const lists = Array.from({ length: 10 }, () => bytes());
        const results = await Promise.all(
          lists.map((list, i) =>
            sut.peers[i % sut.peers.length]!.putDeviceList("race@a.test", {
              expectedVersion: 0,
              version: 1,
              list,
              seen: [],
              remove: [],
            }),
          ),
        );
        expect(results.filter((r) => r === "ok")).toHaveLength(1);
        const winner = lists[results.indexOf("ok")]!;
        expect((await store.getDeviceList("race@a.test"))?.list).toEqual(winner);
      });
    });

    describe("KeyPackages", () => {
      it("refuses KeyPackages for a device that is not registered to the account", async () => {
        const d = await registered();
        expect(await store.addKeyPackages("bob@a.test", d.deviceId, { keyPackages: [kp()] }, NOW)).toEqual({
          ok: false,
          reason: "unknown_device",
        });
        expect(await store.countKeyPackages("bob@a.test", d.deviceId, NOW)).toEqual({
          count: 0,
          lastResort: false,
        });
      });

      it("is idempotent by ref: a re-upload does not double count", async () => {
        const d = await registered();
        const batch = [kp(), kp(), kp()];
        const first = await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: batch }, NOW);
        expect(first).toEqual({ ok: true, stored: 3, count: 3, lastResort: false });
        const again = await store.addKeyPackages(
          d.acct,
          d.deviceId,
          { keyPackages: [...batch, batch[0]!, kp()] },
          NOW,
        );
        expect(again).toEqual({ ok: true, stored: 1, count: 4, lastResort: false });
      });

      it("stores nothing when an upload would pass the per-device cap", async () => {
        const d = await registered();
        await store.addKeyPackages(
          d.acct,
          d.deviceId,
          { keyPackages: Array.from({ length: 28 }, () => kp()) },
          NOW,
        );
        const over = await store.addKeyPackages(
          d.acct,
          d.deviceId,
          { keyPackages: [kp(), kp(), kp()], lastResort: kp() },
          NOW,
        );
        expect(over).toEqual({ ok: false, reason: "key_package_limit" });
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW)).toEqual({
          count: 28,
          lastResort: false,
        });
        const fits = await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp(), kp()] }, NOW);
        expect(fits).toMatchObject({ ok: true, count: 30 });
      });

      it("expired KeyPackages do not count against the cap or in the count", async () => {
        const d = await registered();
        await store.addKeyPackages(
          d.acct,
          d.deviceId,
          { keyPackages: Array.from({ length: 30 }, () => kp(NOW + 60)) },
          NOW,
        );
        expect((await store.countKeyPackages(d.acct, d.deviceId, NOW + 60)).count).toBe(0);
        const later = await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW + 60);
        expect(later).toEqual({ ok: true, stored: 1, count: 1, lastResort: false });
      });

      it("keeps one last-resort KeyPackage, replaced by the next", async () => {
        const d = await registered();
        const lr1 = kp();
        expect(
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr1 }, NOW),
        ).toEqual({
          ok: true,
          stored: 1,
          count: 0,
          lastResort: true,
        });
        expect(
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr1 }, NOW),
        ).toMatchObject({ stored: 0 });
        const lr2 = kp();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr2 }, NOW);
        const claimed = await store.claim(d.acct, d.deviceId, "requester-1", NOW);
        expect(claimed).toEqual({ keyPackage: lr2.keyPackage, lastResort: true, replayed: false });
      });
    });

    describe("claims", () => {
      it("hands out ordinary KeyPackages once each, soonest-expiring first, then the last-resort one", async () => {
        const d = await registered();
        const a = kp(NOW + 3 * DAY);
        const b = kp(NOW + 2 * DAY);
        const lr = kp();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [a, b], lastResort: lr }, NOW);
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW)).toEqual({
          keyPackage: b.keyPackage,
          lastResort: false,
          replayed: false,
        });
        expect((await store.claim(d.acct, d.deviceId, "r2", NOW))?.keyPackage).toEqual(a.keyPackage);
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW)).toEqual({ count: 0, lastResort: true });
        for (const r of ["r3", "r4"]) {
          expect(await store.claim(d.acct, d.deviceId, r, NOW)).toEqual({
            keyPackage: lr.keyPackage,
            lastResort: true,
            replayed: false,
          });
        }
        // The last-resort KeyPackage is not consumed.
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW)).toEqual({ count: 0, lastResort: true });
      });

      it("has nothing for a device with no KeyPackages, or one that is not registered", async () => {
        const d = await registered();
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW)).toBeUndefined();
        expect(await store.claim(d.acct, "nope", "r1", NOW)).toBeUndefined();
      });

      it("never serves an expired KeyPackage, ordinary or last-resort", async () => {
        const d = await registered();
        const soon = kp(NOW + 100);
        const fine = kp(NOW + DAY);
        await store.addKeyPackages(
          d.acct,
          d.deviceId,
          { keyPackages: [soon, fine], lastResort: kp(NOW + 200) },
          NOW,
        );
        const first = await store.claim(d.acct, d.deviceId, "r1", NOW + 100);
        expect(first?.keyPackage).toEqual(fine.keyPackage);
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW + 100)).toEqual({
          count: 0,
          lastResort: true,
        });
        expect((await store.claim(d.acct, d.deviceId, "r2", NOW + 150))?.lastResort).toBe(true);
        expect(await store.claim(d.acct, d.deviceId, "r3", NOW + 200)).toBeUndefined();
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW + 200)).toEqual({
          count: 0,
          lastResort: false,
        });
      });

      it("gives the same requester the same KeyPackage within the memo window, and only then", async () => {
        const d = await registered();
        const batch = [kp(), kp(), kp()];
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: batch }, NOW);
        const first = await store.claim(d.acct, d.deviceId, "r1", NOW);
        const repeat = await store.claim(d.acct, d.deviceId, "r1", NOW + 599);
        expect(repeat).toEqual({ ...first, replayed: true });
        expect((await store.countKeyPackages(d.acct, d.deviceId, NOW)).count).toBe(2);
        const other = await store.claim(d.acct, d.deviceId, "r2", NOW + 1);
        expect(other?.keyPackage).not.toEqual(first?.keyPackage);
        const afterWindow = await store.claim(d.acct, d.deviceId, "r1", NOW + 600);
        expect(afterWindow?.replayed).toBe(false);
        expect(afterWindow?.keyPackage).not.toEqual(first?.keyPackage);
        expect(afterWindow?.keyPackage).not.toEqual(other?.keyPackage);
        expect((await store.countKeyPackages(d.acct, d.deviceId, NOW + 600)).count).toBe(0);
      });

      it("repeats a remembered last-resort KeyPackage within the memo window, even once it was replaced", async () => {
        const d = await registered();
        const [lr1, lr2, lr3] = [kp(), kp(), kp()];
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr1 }, NOW);
        const first = await store.claim(d.acct, d.deviceId, "r1", NOW);
        expect(first).toEqual({ keyPackage: lr1.keyPackage, lastResort: true, replayed: false });
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr2 }, NOW + 10);
        const second = await store.claimAccount(d.acct, {
          memoKey: "r2",
          now: NOW + 20,
          listRequired: false,
        });
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [], lastResort: lr3 }, NOW + 30);
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW + 599)).toEqual({ ...first, replayed: true });
        expect(
          await store.claimAccount(d.acct, { memoKey: "r2", now: NOW + 599, listRequired: false }),
        ).toEqual({
          status: "ok",
          devices: [
            {
              deviceId: d.deviceId,
              claimed: { keyPackage: text(lr2.keyPackage), lastResort: true, replayed: true },
            },
          ],
        });
        expect(second).toMatchObject({ devices: [{ claimed: { replayed: false } }] });
        // A new intent, or the same one after the window, gets the current one.
        expect((await store.claim(d.acct, d.deviceId, "r3", NOW + 40))?.keyPackage).toEqual(lr3.keyPackage);
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW + 600)).toEqual({
          keyPackage: lr3.keyPackage,
          lastResort: true,
          replayed: false,
        });
      });

      it("never repeats a claim made without a memo key (D1)", async () => {
        const d = await registered();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp(), kp()] }, NOW);
        const first = await store.claim(d.acct, d.deviceId, undefined, NOW);
        const second = await store.claim(d.acct, d.deviceId, undefined, NOW + 1);
        expect(first?.replayed).toBe(false);
        expect(second?.replayed).toBe(false);
        expect(second?.keyPackage).not.toEqual(first?.keyPackage);
        expect((await store.countKeyPackages(d.acct, d.deviceId, NOW + 1)).count).toBe(0);
      });

      it("does not repeat a remembered KeyPackage once it has expired", async () => {
        const d = await registered();
        const short = kp(NOW + 100);
        const long = kp(NOW + DAY);
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [short, long] }, NOW);
        expect((await store.claim(d.acct, d.deviceId, "r1", NOW))?.keyPackage).toEqual(short.keyPackage);
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW + 100)).toEqual({
          keyPackage: long.keyPackage,
          lastResort: false,
          replayed: false,
        });
      });

      it("never takes back a KeyPackage it handed out, even when it is uploaded again", async () => {
        const d = await registered();
        const only = kp();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [only] }, NOW);
        expect((await store.claim(d.acct, d.deviceId, "r1", NOW))?.keyPackage).toEqual(only.keyPackage);
        expect(await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [only] }, NOW)).toEqual({
          ok: true,
          stored: 0,
          count: 0,
          lastResort: false,
        });
        expect(await store.claim(d.acct, d.deviceId, "r2", NOW)).toBeUndefined();
      });

      it("hands out only the last-resort KeyPackage when told to, still repeating a remembered answer", async () => {
        const d = await registered();
        const lr = kp();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp(), kp()], lastResort: lr }, NOW);
        const first = await store.claim(d.acct, d.deviceId, "r1", NOW);
        expect(first?.lastResort).toBe(false);
        const downgraded = await store.claim(d.acct, d.deviceId, "r2", NOW, { lastResortOnly: true });
        expect(downgraded).toEqual({ keyPackage: lr.keyPackage, lastResort: true, replayed: false });
        // r1 repeating its intent gets what it was given, not a downgrade.
        expect(await store.claim(d.acct, d.deviceId, "r1", NOW + 1, { lastResortOnly: true })).toEqual({
          ...first,
          replayed: true,
        });
        expect((await store.countKeyPackages(d.acct, d.deviceId, NOW + 1)).count).toBe(1);
        // Without a last-resort KeyPackage the device has nothing to give when told so.
        const bare = await registered("bare@a.test");
        await store.addKeyPackages(bare.acct, bare.deviceId, { keyPackages: [kp()] }, NOW);
        expect(await store.claim(bare.acct, bare.deviceId, undefined, NOW, { lastResortOnly: true })).toBe(
          undefined,
        );
      });

      it("sweeps expired KeyPackages of every device and counts what is left", async () => {
        const a = await registered("alice@a.test");
        const b = await registered("bob@a.test");
        const idle = await registered("idle@a.test");
        await store.addKeyPackages(
          a.acct,
          a.deviceId,
          { keyPackages: [kp(NOW + 100), kp(NOW + 100), kp()], lastResort: kp(NOW + 100) },
          NOW,
        );
        await store.addKeyPackages(b.acct, b.deviceId, { keyPackages: [kp(), kp()], lastResort: kp() }, NOW);
        await store.addKeyPackages(idle.acct, idle.deviceId, { keyPackages: [kp(NOW + 50)] }, NOW);
        expect(await store.sweep(NOW)).toEqual({ keyPackages: 6, lastResort: 2, purged: 0 });
        expect(await store.sweep(NOW + 100)).toEqual({ keyPackages: 3, lastResort: 1, purged: 4 });
        // Nothing left to purge the second time, and the counts agree with each device's.
        expect(await store.sweep(NOW + 100)).toEqual({ keyPackages: 3, lastResort: 1, purged: 0 });
        expect(await store.countKeyPackages(a.acct, a.deviceId, NOW + 100)).toEqual({
          count: 1,
          lastResort: false,
        });
        expect(await store.countKeyPackages(idle.acct, idle.deviceId, NOW + 100)).toEqual({
          count: 0,
          lastResort: false,
        });
        // The swept device still works: a claim gets its remaining KeyPackage.
        expect((await store.claim(a.acct, a.deviceId, undefined, NOW + 100))?.lastResort).toBe(false);
        expect(await store.claim(a.acct, a.deviceId, undefined, NOW + 100)).toBeUndefined();
      });

      it("under 50 concurrent claims, hands out each of 20 KeyPackages exactly once and the last-resort 30 times", async () => {
        const d = await registered();
        const batch = Array.from({ length: 20 }, () => kp());
        const lr = kp();
        await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: batch, lastResort: lr }, NOW);
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            sut.peers[i % sut.peers.length]!.claim(d.acct, d.deviceId, `requester-${i}`, NOW),
          ),
        );
        const ordinary = results.filter((r) => r && !r.lastResort).map((r) => text(r!.keyPackage));
        const lastResort = results.filter((r) => r?.lastResort);
        expect(ordinary).toHaveLength(20);
        expect(new Set(ordinary)).toEqual(new Set(batch.map((k) => text(k.keyPackage))));
        expect(lastResort).toHaveLength(30);
        expect(lastResort.every((r) => text(r!.keyPackage) === text(lr.keyPackage))).toBe(true);
        expect(await store.countKeyPackages(d.acct, d.deviceId, NOW)).toEqual({ count: 0, lastResort: true });
      });

      describe("claims of a whole account", () => {
        const claimOf = (over: Partial<AccountClaim> = {}): AccountClaim => ({
          memoKey: undefined,
          now: NOW,
          listRequired: false,
          ...over,
        });

        it("claims one KeyPackage per device, oldest registration first, never the requester's own", async () => {
          const acct = "alice@a.test";
          const older = device(acct, { registeredAt: NOW - 100 });
          const newer = device(acct, { registeredAt: NOW });
          const requester = device(acct, { registeredAt: NOW - 50 });
          // Registered out of order: the answer is still oldest first.
          for (const d of [newer, requester, older]) expect(await store.putDevice(d)).toBe("created");
          const [a, b] = [kp(), kp()];
          await store.addKeyPackages(acct, older.deviceId, { keyPackages: [a] }, NOW);
          await store.addKeyPackages(acct, requester.deviceId, { keyPackages: [b] }, NOW);
          const result = await store.claimAccount(acct, claimOf({ excludeDeviceId: requester.deviceId }));
          expect(result).toEqual({
            status: "ok",
            devices: [
              {
                deviceId: older.deviceId,
                claimed: { keyPackage: text(a.keyPackage), lastResort: false, replayed: false },
              },
              // Nothing uploaded: exhausted.
              { deviceId: newer.deviceId, claimed: undefined },
            ],
          });
          // The requester's own device was not touched; the claimed one is empty now.
          expect(await store.countKeyPackages(acct, requester.deviceId, NOW)).toEqual({
            count: 1,
            lastResort: false,
          });
          expect(await store.countKeyPackages(acct, older.deviceId, NOW)).toEqual({
            count: 0,
            lastResort: false,
          });
          // Only the requester's own device registered: nothing to hand out, but the account has devices.
          const solo = await registered("solo@a.test");
          expect(await store.claimAccount(solo.acct, claimOf({ excludeDeviceId: solo.deviceId }))).toEqual({
            status: "ok",
            devices: [],
          });
        });

        it("has no devices without registrations, or without a device list when lists are required", async () => {
          expect(await store.claimAccount("nobody@a.test", claimOf())).toEqual({ status: "no_devices" });
          const d = await registered("listless@a.test");
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW);
          expect(await store.claimAccount(d.acct, claimOf({ listRequired: true }))).toEqual({
            status: "no_devices",
          });
          // Refused as no_devices, so nothing was taken.
          expect((await store.countKeyPackages(d.acct, d.deviceId, NOW)).count).toBe(1);
          expect(
            await store.putDeviceList(d.acct, {
              expectedVersion: 0,
              version: 1,
              list: new Uint8Array([1]),
              seen: [{ deviceId: d.deviceId, certificate: d.certificate }],
              remove: [],
            }),
          ).toBe("ok");
          const listed = await store.claimAccount(d.acct, claimOf({ listRequired: true }));
          expect(listed.status === "ok" && listed.devices[0]?.claimed?.lastResort).toBe(false);
        });

        it("says what a claim would find without taking anything", async () => {
          expect(await store.claimTargets("nobody@a.test", claimOf())).toBe("no_devices");
          const d = await registered("peek@a.test");
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp()] }, NOW);
          expect(await store.claimTargets(d.acct, claimOf())).toBe(1);
          // The requester's own device is not one to claim from; another account's device id changes nothing.
          expect(await store.claimTargets(d.acct, claimOf({ excludeDeviceId: d.deviceId }))).toBe(0);
          expect(await store.claimTargets(d.acct, claimOf({ excludeDeviceId: "X".repeat(43) }))).toBe(1);
          expect(await store.claimTargets(d.acct, claimOf({ listRequired: true }))).toBe("no_devices");
          expect((await store.countKeyPackages(d.acct, d.deviceId, NOW)).count).toBe(1);
        });

        it("hands out last-resort KeyPackages only while the account is over its budget", async () => {
          const d = await registered("target@a.test");
          const lr = kp();
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: [kp(), kp()], lastResort: lr }, NOW);
          const first = await store.claimAccount(d.acct, claimOf({ memoKey: "r1" }));
          expect(first.status === "ok" && first.devices[0]?.claimed?.lastResort).toBe(false);
          const over = await store.claimAccount(d.acct, claimOf({ memoKey: "r2", overBudget: true }));
          expect(over.status === "ok" && over.devices[0]?.claimed).toEqual({
            keyPackage: text(lr.keyPackage),
            lastResort: true,
            replayed: false,
          });
          // The ordinary KeyPackage left was not touched.
          expect((await store.countKeyPackages(d.acct, d.deviceId, NOW)).count).toBe(1);
          // A repeat of r1's intent still gets what r1 got, not a downgrade.
          const repeat = await store.claimAccount(
            d.acct,
            claimOf({ memoKey: "r1", overBudget: true, now: NOW + 1 }),
          );
          expect(repeat.status === "ok" && repeat.devices[0]?.claimed).toMatchObject({
            lastResort: false,
            replayed: true,
          });
          // Within budget again: the ordinary one.
          const within = await store.claimAccount(d.acct, claimOf({ memoKey: "r3", now: NOW + 2 }));
          expect(within.status === "ok" && within.devices[0]?.claimed?.lastResort).toBe(false);
        });

        it("under 50 concurrent account claims, hands out each of 20 KeyPackages exactly once", async () => {
          const d = await registered();
          const batch = Array.from({ length: 20 }, () => kp());
          const lr = kp();
          await store.addKeyPackages(d.acct, d.deviceId, { keyPackages: batch, lastResort: lr }, NOW);
          const results = await Promise.all(
            Array.from({ length: 50 }, (_, i) =>
              sut.peers[i % sut.peers.length]!.claimAccount(d.acct, claimOf({ memoKey: `requester-${i}` })),
            ),
          );
          const claimed = results.map((r) => (r.status === "ok" ? r.devices[0]?.claimed : undefined));
          const ordinary = claimed.filter((c) => c && !c.lastResort).map((c) => c!.keyPackage);
          expect(ordinary).toHaveLength(20);
          expect(new Set(ordinary)).toEqual(new Set(batch.map((k) => text(k.keyPackage))));
          const lastResort = claimed.filter((c) => c?.lastResort);
          expect(lastResort).toHaveLength(30);
          expect(lastResort.every((c) => c!.keyPackage === text(lr.keyPackage))).toBe(true);
        });
      });
    });
  });
}
