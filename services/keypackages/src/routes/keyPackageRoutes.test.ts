import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import {
  b64,
  createTestDevice,
  deviceSigned,
  keyPackageOf,
  keyPackagesOf,
  p256KeyPackage,
} from "../testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type Member,
  type RunningDirectory,
} from "../testing/harness.js";

let mastodon: DevMastodon;
let dir: RunningDirectory;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  dir = await startDirectory(mastodon.url, {}, { storeLimits: { keyPackagesPerDevice: 5 } });
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

let n = 0;
const member = () => createMember(mastodon, dir.url, `kp${++n}`);

function upload(m: Member, body: unknown, deviceId = m.device.deviceId) {
  return call(dir.url, `/v1/devices/${deviceId}/keypackages`, { token: m.token, body });
}

async function count(m: Member): Promise<unknown> {
  const path = `/v1/devices/${m.device.deviceId}/keypackages/count`;
  return (
    await call(dir.url, path, await deviceSigned(m.device, { origin: PUBLIC_URL, method: "GET", path }))
  ).json;
}

describe("POST /v1/devices/:deviceId/keypackages", () => {
  it("refuses a device that is not registered to the token's account", async () => {
    const alice = await member();
    const bob = await member();
    const stranger = await createTestDevice(alice.acct);
    const kp = await keyPackageOf(stranger);
    expect(await upload(alice, { key_packages: [b64(kp.encoded)] }, stranger.deviceId)).toMatchObject({
      status: 404,
      json: { error: "unknown_device" },
    });
    // Bob's token for Alice's device: not Bob's device.
    const alices = await keyPackageOf(alice.device);
    expect(await upload(bob, { key_packages: [b64(alices.encoded)] }, alice.device.deviceId)).toMatchObject({
      status: 404,
      json: { error: "unknown_device" },
    });
  });

  it("refuses KeyPackages of another account or another device", async () => {
    const alice = await member();
    const bob = await member();
    const bobs = await keyPackageOf(bob.device);
    expect(await upload(alice, { key_packages: [b64(bobs.encoded)] })).toMatchObject({
      status: 403,
      json: { error: "acct_mismatch", field: "key_packages", index: 0 },
    });
    const secondDevice = await createTestDevice(alice.acct, { account: alice.device.account });
    const other = await keyPackageOf(secondDevice);
    expect(await upload(alice, { key_packages: [b64(other.encoded)] })).toMatchObject({
      status: 403,
      json: { error: "device_mismatch" },
    });
    // A KeyPackage whose certificate is for another key than its leaf (a directory could not forge one).
    const rogue = await keyPackageOf(alice.device, { key: secondDevice.key });
    expect(await upload(alice, { key_packages: [b64(rogue.encoded)] })).toMatchObject({
      status: 400,
      json: { error: "invalid_certificate" },
    });
    expect(await count(alice)).toEqual({ count: 0, last_resort: false });
  });

  it("refuses expired KeyPackages, other ciphersuites, trailing bytes, truncation and bad base64url", async () => {
    const alice = await member();
    const now = Math.floor(Date.now() / 1000);
    const expired = await keyPackageOf(alice.device, { now: now - 7200, lifetimeSeconds: 3600 });
    const good = await keyPackageOf(alice.device);
    const cases: [string, string][] = [
      [b64(expired.encoded), "lifetime_invalid"],
      [b64(await p256KeyPackage(alice.device.identity)), "unsupported_ciphersuite"],
      [b64(Uint8Array.from([...good.encoded, 0])), "trailing_bytes"],
      [b64(good.encoded.subarray(0, good.encoded.length - 10)), "invalid_key_package"],
      [b64(new Uint8Array(300).fill(0xff)), "invalid_key_package"],
      ["A", "invalid_encoding"],
      ["AB", "invalid_encoding"],
      [b64(new Uint8Array(8193)), "invalid_key_package"],
    ];
    for (const [text, error] of cases) {
      const res = await upload(alice, { key_packages: [b64(good.encoded), text] });
      expect(res.status, error).toBeGreaterThanOrEqual(400);
      expect(res.status, error).toBeLessThan(500);
      expect(res.json, error).toMatchObject({ error, field: "key_packages", index: 1 });
      expect(res.json.message).toMatch(/^key_packages\[1\]: /);
    }
    expect(await upload(alice, { key_packages: ["not base64url!"] })).toMatchObject({
      status: 400,
      json: { error: "invalid_body" },
    });
    // All or nothing: the good KeyPackage sent with each bad one was not stored either.
    expect(await count(alice)).toEqual({ count: 0, last_resort: false });
  });

  it("keeps last-resort KeyPackages in their own field", async () => {
    const alice = await member();
    const ordinary = await keyPackageOf(alice.device);
    const lastResort = await keyPackageOf(alice.device, { lastResort: true });
    expect(await upload(alice, { key_packages: [b64(lastResort.encoded)] })).toMatchObject({
      status: 400,
      json: { error: "invalid_key_package", index: 0 },
    });
    expect(await upload(alice, { key_packages: [], last_resort: b64(ordinary.encoded) })).toMatchObject({
      status: 400,
      json: { error: "invalid_key_package", field: "last_resort" },
    });
    expect(await count(alice)).toEqual({ count: 0, last_resort: false });
    const ok = await upload(alice, {
      key_packages: [b64(ordinary.encoded)],
      last_resort: b64(lastResort.encoded),
    });
    expect(ok).toMatchObject({ status: 200, json: { stored: 2, count: 1, last_resort: true } });
  });

  it("caps the KeyPackages a device holds, storing nothing of an upload that does not fit", async () => {
    const alice = await member();
    const kps = await keyPackagesOf(alice.device, 6);
    const first = await upload(alice, { key_packages: kps.slice(0, 4).map((k) => b64(k.encoded)) });
    expect(first.json).toEqual({ stored: 4, count: 4, last_resort: false });
    const over = await upload(alice, { key_packages: kps.slice(2, 6).map((k) => b64(k.encoded)) });
    expect(over).toMatchObject({ status: 400, json: { error: "too_many_items" } });
    expect(await count(alice)).toEqual({ count: 4, last_resort: false });
    const fits = await upload(alice, { key_packages: kps.slice(3, 5).map((k) => b64(k.encoded)) });
    expect(fits.json).toEqual({ stored: 1, count: 5, last_resort: false });
  });
});

describe("GET /v1/devices/:deviceId/keypackages/count", () => {
  it("answers only the device itself, and only a registered one", async () => {
    const alice = await member();
    const bob = await member();
    const path = `/v1/devices/${alice.device.deviceId}/keypackages/count`;
    const byBob = await call(
      dir.url,
      path,
      await deviceSigned(bob.device, { origin: PUBLIC_URL, method: "GET", path }),
    );
    expect(byBob).toMatchObject({ status: 403, json: { error: "forbidden" } });
    const unregistered = await createTestDevice(alice.acct);
    const ownPath = `/v1/devices/${unregistered.deviceId}/keypackages/count`;
    const res = await call(
      dir.url,
      ownPath,
      await deviceSigned(unregistered, { origin: PUBLIC_URL, method: "GET", path: ownPath }),
    );
    expect(res).toMatchObject({ status: 404, json: { error: "unknown_device" } });
    expect(await call(dir.url, path, { token: alice.token })).toMatchObject({
      status: 401,
      json: { error: "auth_invalid" },
    });
  });
});
