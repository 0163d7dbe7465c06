import { describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { generateSigningKeyPair } from "./crypto.js";
import { parseDeviceCertificate, signDeviceCertificate } from "./deviceCertificate.js";
import {
  addDevice,
  createDeviceList,
  decodeDeviceList,
  reissueDeviceList,
  verifyDeviceList,
} from "./deviceList.js";
import { checkCertificateInList, verifyDeviceListUpdate } from "./deviceListUpdate.js";
import { signKeyRotation } from "./keyRotation.js";

const NOW = 1_800_000_000;
const ID = "acct:alice@a.test";
const [k1, k2, dev, other] = await Promise.all([1, 2, 3, 4].map(() => generateSigningKeyPair()));
const v1Bytes = await createDeviceList({
  identity: ID,
  accountKey: k1!,
  devices: [{ sigKey: dev!.publicKey, name: "phone" }],
  now: NOW,
});
const v1 = await verifyDeviceList(decodeDeviceList(v1Bytes), k1!.publicKey, NOW);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

const cert = (account = k1!, sigKey = dev!.publicKey, identity = ID) =>
  signDeviceCertificate(
    { identity, accountKey: account.publicKey, sigKey, notBefore: NOW - 60, notAfter: NOW + 86400 },
    account.signKey,
  ).then((bytes) => parseDeviceCertificate(bytes, NOW));

describe("directory checks on device lists and certificates", () => {
  it("DIR-1…DIR-3: accepts a first list and higher versions for the token's account only", async () => {
    expect(
      (await verifyDeviceListUpdate({ acct: "alice@a.test", stored: undefined, next: v1Bytes, now: NOW }))
        .list.version,
    ).toBe(1);
    expect(
      await codeOf(
        verifyDeviceListUpdate({ acct: "bob@a.test", stored: undefined, next: v1Bytes, now: NOW }),
      ),
    ).toBe("acct_mismatch");
    expect(
      await codeOf(verifyDeviceListUpdate({ acct: "alice@a.test", stored: v1, next: v1Bytes, now: NOW })),
    ).toBe("stale_device_list");
    const v2 = await addDevice(v1, { sigKey: other!.publicKey, name: "laptop" }, k1!, NOW);
    expect(
      (await verifyDeviceListUpdate({ acct: "alice@a.test", stored: v1, next: v2, now: NOW })).list.version,
    ).toBe(2);
    const tampered = v2.slice();
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 1;
    expect(
      await codeOf(verifyDeviceListUpdate({ acct: "alice@a.test", stored: v1, next: tampered, now: NOW })),
    ).toBe("invalid_device_list");
  });

  it("DIR-4: a key change is stored with a continuity statement linking the stored key, or without one", async () => {
    const v2 = await reissueDeviceList(v1, k2!, NOW);
    const good = await signKeyRotation({ identity: ID, oldKey: k1!, newKey: k2!.publicKey, now: NOW });
    const r = await verifyDeviceListUpdate({
      acct: "alice@a.test",
      stored: v1,
      next: v2,
      keyRotation: good,
      now: NOW,
    });
    expect(r.rotation?.newKey).toEqual(k2!.publicKey);
    expect(
      (await verifyDeviceListUpdate({ acct: "alice@a.test", stored: v1, next: v2, now: NOW })).rotation,
    ).toBeUndefined();
    const unrelated = await signKeyRotation({
      identity: ID,
      oldKey: other!,
      newKey: k2!.publicKey,
      now: NOW,
    });
    expect(
      await codeOf(
        verifyDeviceListUpdate({
          acct: "alice@a.test",
          stored: v1,
          next: v2,
          keyRotation: unrelated,
          now: NOW,
        }),
      ),
    ).toBe("invalid_key_rotation");
  });

  it("DIR-5: a certificate must be for a listed device, by the list's key or one linked to it", async () => {
    await expect(checkCertificateInList(await cert(), v1)).resolves.toBeUndefined();
    expect(await codeOf(checkCertificateInList(await cert(k1, other!.publicKey), v1))).toBe("unknown_device");
    expect(await codeOf(checkCertificateInList(await cert(other), v1))).toBe("invalid_certificate");
    const v2 = await verifyDeviceList(
      decodeDeviceList(await reissueDeviceList(v1, k2!, NOW)),
      k2!.publicKey,
      NOW,
    );
    const rotation = await signKeyRotation({ identity: ID, oldKey: k1!, newKey: k2!.publicKey, now: NOW });
    expect(await codeOf(checkCertificateInList(await cert(), v2))).toBe("invalid_certificate");
    await expect(checkCertificateInList(await cert(), v2, [rotation], NOW)).resolves.toBeUndefined();
  });
});
