import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LABEL_DEVICE_LIST, ProtocolError } from "@mastodon-mls/protocol";
import { generateSigningKeyPair, signLabeled, type SigningKeyPair } from "./crypto.js";
import { deviceIdOf } from "./deviceCertificate.js";
import {
  isSafeDeviceName,
  stripUnsafeNameChars,
  addDevice,
  checkDeviceListSuccessor,
  createDeviceList,
  decodeDeviceList,
  encodeDeviceListTbs,
  reissueDeviceList,
  revokeDevice,
  verifyDeviceList,
  type DeviceListTbs,
} from "./deviceList.js";
import { encodeEnvelope } from "./signedEnvelope.js";

const NOW = 1_800_000_000;
const ID = "acct:alice@a.test";

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

/** Signs whatever it is given, bypassing the signer's own checks: what a hostile signer could produce. */
async function forceSign(tbs: DeviceListTbs, key: SigningKeyPair): Promise<Uint8Array> {
  const encoded = encodeDeviceListTbs(tbs);
  return encodeEnvelope(encoded, await signLabeled(key.signKey, LABEL_DEVICE_LIST, encoded));
}

const account = await generateSigningKeyPair();
const devices = await Promise.all([generateSigningKeyPair(), generateSigningKeyPair()]);
const listBytes = await createDeviceList({
  identity: ID,
  accountKey: account,
  devices: devices.map((d, i) => ({ sigKey: d.publicKey, name: `phone ${i}` })),
  now: NOW,
});

function tbs(overrides: Partial<DeviceListTbs> = {}): DeviceListTbs {
  return {
    identity: ID,
    accountKey: account.publicKey,
    version: 1,
    devices: devices.map((d, i) => ({
      deviceId: deviceIdOf(d.publicKey),
      sigKey: d.publicKey,
      name: `d${i}`,
      addedAt: NOW,
    })),
    issuedAt: NOW,
    ...overrides,
  };
}

async function verdict(t: DeviceListTbs, key = account): Promise<string> {
  const bytes = await forceSign(t, key);
  return codeOf(() => verifyDeviceList(decodeDeviceList(bytes), key.publicKey, NOW));
}

describe("device list", () => {
  it("round-trips and verifies under the account key (DL-1…DL-9)", async () => {
    const list = await verifyDeviceList(decodeDeviceList(listBytes), account.publicKey, NOW);
    expect(list.acct).toBe("alice@a.test");
    expect(list.version).toBe(1);
    expect(list.devices.map((d) => d.name)).toEqual(["phone 0", "phone 1"]);
    expect(list.devices[1]!.sigKey).toEqual(devices[1].publicKey);
  });

  it("DL-1: rejects every single-byte change", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: listBytes.byteLength - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (i, x) => {
          const bad = listBytes.slice();
          bad[i] = bad[i]! ^ x;
          expect(await codeOf(() => verifyDeviceList(decodeDeviceList(bad), account.publicKey, NOW))).toBe(
            "invalid_device_list",
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it("DL-1: round-trips any valid device set", async () => {
    const keys = await Promise.all(Array.from({ length: 16 }, () => generateSigningKeyPair()));
    await fc.assert(
      fc.asyncProperty(
        fc.subarray(keys, { maxLength: 16 }),
        fc.string({ unit: "grapheme", maxLength: 16 }),
        fc.integer({ min: 1, max: 9_999_999_999 }),
        async (chosen, name, version) => {
          const t = tbs({
            version,
            devices: chosen.map((k) => ({
              deviceId: deviceIdOf(k.publicKey),
              sigKey: k.publicKey,
              name,
              addedAt: NOW,
            })),
          });
          fc.pre(
            !/[\p{Cc}\u202a-\u202e\u2066-\u2069]/u.test(name) && new TextEncoder().encode(name).length <= 64,
          );
          const decoded = await verifyDeviceList(
            decodeDeviceList(await forceSign(t, account)),
            account.publicKey,
            NOW,
          );
          expect({ ...decoded, devices: decoded.devices }).toMatchObject({ ...t, devices: t.devices });
        },
      ),
      { numRuns: 25 },
    );
  });

  it("DL-1: refuses truncation and trailing bytes", () => {
    expect(() => decodeDeviceList(listBytes.subarray(0, listBytes.byteLength - 1))).toThrow(ProtocolError);
    expect(() => decodeDeviceList(Uint8Array.from([...listBytes, 0]))).toThrow(ProtocolError);
  });

  it("DL-2…DL-7: refuses a bad acct, key, version, too many or duplicate devices, bad ids and names", async () => {
    const d0 = tbs().devices[0]!;
    const many = await Promise.all(Array.from({ length: 17 }, () => generateSigningKeyPair()));
    const cases: Array<[string, Partial<DeviceListTbs>]> = [
      ["DL-2 acct", { identity: "acct:Alice@a.test" }],
      ["DL-3 key", { accountKey: account.publicKey.subarray(0, 31) }],
      ["DL-4 version 0", { version: 0 }],
      ["DL-4 version too big", { version: 10_000_000_000 }],
      ["DL-6 duplicate", { devices: [d0, d0] }],
      ["DL-6 id", { devices: [{ ...d0, deviceId: new Uint8Array(32) }] }],
      ["DL-7 long name", { devices: [{ ...d0, name: "é".repeat(33) }] }],
      ["DL-7 control", { devices: [{ ...d0, name: "ph\u202eone" }] }],
    ];
    for (const [label, o] of cases)
      expect([label, await verdict(tbs(o))]).toEqual([label, "invalid_device_list"]);
    // DL-5: the decoder itself stops at 16.
    const tooMany = tbs({
      devices: many.map((k) => ({
        deviceId: deviceIdOf(k.publicKey),
        sigKey: k.publicKey,
        name: "",
        addedAt: NOW,
      })),
    });
    expect(await verdict(tooMany)).toBe("invalid_device_list");
  });

  it("DL-8: refuses a list signed by, or naming, another key; DL-9: one issued in the future", async () => {
    const other = await generateSigningKeyPair();
    const byOther = await forceSign(tbs({ accountKey: other.publicKey }), other);
    expect(await codeOf(() => verifyDeviceList(decodeDeviceList(byOther), account.publicKey, NOW))).toBe(
      "invalid_device_list",
    );
    const lying = await forceSign(tbs(), other); // names the account key, signed by another
    expect(await codeOf(() => verifyDeviceList(decodeDeviceList(lying), account.publicKey, NOW))).toBe(
      "invalid_device_list",
    );
    expect(await verdict(tbs({ issuedAt: NOW + 301 }))).toBe("invalid_device_list");
    expect(await verdict(tbs({ issuedAt: NOW + 299 }))).toBe("ok");
  });

  it("adds and revokes devices as new versions; DL-10 keeps versions growing", async () => {
    const v1 = await verifyDeviceList(decodeDeviceList(listBytes), account.publicKey, NOW);
    const extra = await generateSigningKeyPair();
    const v2 = await verifyDeviceList(
      decodeDeviceList(await addDevice(v1, { sigKey: extra.publicKey, name: "laptop" }, account, NOW + 10)),
      account.publicKey,
      NOW + 10,
    );
    expect(v2.version).toBe(2);
    expect(v2.devices).toHaveLength(3);
    await expect(
      codeOf(() => addDevice(v2, { sigKey: extra.publicKey, name: "again" }, account)),
    ).resolves.toBe("invalid_device_list");
    const v3 = await verifyDeviceList(
      decodeDeviceList(await revokeDevice(v2, deviceIdOf(devices[0].publicKey), account, NOW + 20)),
      account.publicKey,
      NOW + 20,
    );
    expect(v3.version).toBe(3);
    expect(v3.devices.map((d) => d.name)).toEqual(["phone 1", "laptop"]);

    expect(checkDeviceListSuccessor(v1, v2)).toEqual({ keyChanged: false });
    expect(await codeOf(() => checkDeviceListSuccessor(v2, v1))).toBe("stale_device_list");
    expect(await codeOf(() => checkDeviceListSuccessor(v2, v2))).toBe("stale_device_list");
    const rotated = await generateSigningKeyPair();
    const v4 = await verifyDeviceList(
      decodeDeviceList(await reissueDeviceList(v3, rotated, NOW + 30)),
      rotated.publicKey,
      NOW + 30,
    );
    expect(checkDeviceListSuccessor(v3, v4)).toEqual({ keyChanged: true });
  });
});

describe("DL-7 device names", () => {
  it("what stripUnsafeNameChars leaves is always safe, and a safe name is left as it is", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 40 }), (name) => {
        const stripped = stripUnsafeNameChars(name);
        expect(isSafeDeviceName(stripped)).toBe(true);
        if (isSafeDeviceName(name)) expect(stripped).toBe(name);
      }),
    );
    expect(isSafeDeviceName("phone\u202e")).toBe(false);
    expect(isSafeDeviceName("tab\there")).toBe(false);
    expect(stripUnsafeNameChars("a\u2066b\u0007c")).toBe("abc");
  });
});
