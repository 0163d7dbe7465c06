import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import {
  deviceIdOf,
  generateSigningKeyPair,
  signDeviceList,
  signKeyRotation,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import type { AccountDevices } from "@mastodon-mls/protocol";
import { connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import type { DirectoryStore } from "../store/directoryStore.js";
import { MemoryDirectoryStore } from "../store/memoryStore.js";
import { RedisDirectoryStore } from "../store/redisStore.js";
import { b64, createTestDevice, deviceSigned, keyPackageOf, type TestDevice } from "../testing/devices.js";
import {
  PUBLIC_URL,
  call,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "../testing/harness.js";

// PUT /v1/accounts/:acct/device-list and what a stored list does to registrations, uploads and claims
// (docs/identity.md DIR-1…DIR-5), over real HTTP against the development Mastodon, on both stores.

let mastodon: DevMastodon;
let redis: RedisHandle;
let claimant: TestDevice;
const connections: Redis[] = [];

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
  claimant = await createTestDevice("someone@b.test");
});
afterAll(async () => {
  await Promise.all(connections.map((c) => c.quit()));
  await Promise.all([mastodon.close(), redis.stop()]);
});

const now = () => Math.floor(Date.now() / 1000);

let n = 0;
function account(prefix: string): { username: string; acct: string; identity: string; token: string } {
  n += 1;
  const username = `${prefix}${n}`;
  mastodon.createAccount({ username });
  return {
    username,
    acct: `${username}@a.test`,
    identity: `acct:${username}@a.test`,
    token: mastodon.issueToken({ username, scopes: "read write" }),
  };
}

/** A signed list of these devices' keys, by `key`. */
function listOf(identity: string, key: SigningKeyPair, version: number, devices: TestDevice[]) {
  return signDeviceList(
    {
      identity,
      accountKey: key.publicKey,
      version,
      devices: devices.map((d) => ({
        deviceId: deviceIdOf(d.key.publicKey),
        sigKey: d.key.publicKey,
        name: "device",
        addedAt: now() - 10,
      })),
      issuedAt: now() - 5,
    },
    key,
  );
}

function putList(url: string, acct: string, token: string, list: Uint8Array, rotation?: Uint8Array) {
  return call(url, `/v1/accounts/${acct}/device-list`, {
    method: "PUT",
    token,
    body: { device_list: b64(list), ...(rotation ? { key_rotation: b64(rotation) } : {}) },
  });
}

function register(url: string, device: TestDevice, token: string) {
  return call(url, `/v1/devices/${device.deviceId}`, {
    method: "PUT",
    token,
    body: { certificate: b64(device.certificate) },
  });
}

async function upload(url: string, device: TestDevice, token: string, certificate?: Uint8Array) {
  const kp = await keyPackageOf(device, certificate ? { certificate } : {});
  return call(url, `/v1/devices/${device.deviceId}/keypackages`, {
    token,
    body: { key_packages: [b64(kp.encoded)] },
  });
}

async function claim(url: string, acct: string) {
  const body = { ciphersuite: 1, accounts: [acct] };
  const res = await call(
    url,
    "/v1/claims",
    await deviceSigned(claimant, { origin: PUBLIC_URL, method: "POST", path: "/v1/claims", body }),
  );
  expect(res.status).toBe(200);
  return res.json.accounts[0] as {
    status: string;
    key_packages: { device_id: string }[];
    exhausted: string[];
  };
}

const claimedDevices = async (url: string, acct: string) =>
  (await claim(url, acct)).key_packages.map((k) => k.device_id).sort();

describe.each(["memory", "redis"] as const)("device lists over HTTP, %s store", (store) => {
  let dir: RunningDirectory;
  beforeAll(async () => {
    dir = await startDirectory(
      mastodon.url,
      store === "redis"
        ? { STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: `${redis.keyPrefix}dl:` }
        : {},
    );
  });
  afterAll(async () => {
    await dir.close();
  });

  it("publishes lists, registers and claims only listed devices, refuses stale lists, and revokes at once", async () => {
    const alice = account("alice");
    const phone = await createTestDevice(alice.acct);
    const laptop = await createTestDevice(alice.acct, { account: phone.account });
    const v1 = await listOf(alice.identity, phone.account, 1, [phone]);

    expect(await putList(dir.url, alice.acct, alice.token, v1)).toMatchObject({
      status: 200,
      json: { acct: alice.acct, version: 1, removed: [] },
    });
    expect((await call(dir.url, `/v1/accounts/${alice.acct}/devices`)).json).toEqual({
      acct: alice.acct,
      device_list: b64(v1),
      devices: [],
      key_rotations: [],
    });
    expect((await register(dir.url, phone, alice.token)).status).toBe(201);
    expect(await upload(dir.url, phone, alice.token)).toMatchObject({ status: 200, json: { count: 1 } });
    // A device the list does not name cannot register, nor upload.
    expect(await register(dir.url, laptop, alice.token)).toMatchObject({
      status: 403,
      json: { error: "device_not_listed" },
    });
    expect(await upload(dir.url, laptop, alice.token)).toMatchObject({
      status: 404,
      json: { error: "unknown_device" },
    });
    expect(await claimedDevices(dir.url, alice.acct)).toEqual([phone.deviceId]);

    // v2 adds the laptop.
    const v2 = await listOf(alice.identity, phone.account, 2, [phone, laptop]);
    expect(await putList(dir.url, alice.acct, alice.token, v2)).toMatchObject({
      status: 200,
      json: { version: 2, removed: [] },
    });
    expect((await register(dir.url, laptop, alice.token)).status).toBe(201);
    expect((await upload(dir.url, phone, alice.token)).status).toBe(200);
    expect((await upload(dir.url, laptop, alice.token)).status).toBe(200);
    expect(await claimedDevices(dir.url, alice.acct)).toEqual([phone.deviceId, laptop.deviceId].sort());

    // An older list is refused; the stored one sent again is a retry, answered as before.
    const stale = await putList(dir.url, alice.acct, alice.token, v1);
    expect(stale).toMatchObject({ status: 409, json: { error: "stale_device_list" } });
    const otherV2 = await listOf(alice.identity, phone.account, 2, [phone]);
    expect(await putList(dir.url, alice.acct, alice.token, otherV2)).toMatchObject({
      status: 409,
      json: { error: "stale_device_list" },
    });
    expect(await putList(dir.url, alice.acct, alice.token, v2)).toMatchObject({
      status: 200,
      json: { version: 2, removed: [] },
    });

    // v3 revokes the laptop: its registration and its unused KeyPackages go in the same step.
    await upload(dir.url, phone, alice.token);
    expect(await upload(dir.url, laptop, alice.token)).toMatchObject({ status: 200, json: { count: 1 } });
    const v3 = await listOf(alice.identity, phone.account, 3, [phone]);
    expect(await putList(dir.url, alice.acct, alice.token, v3)).toMatchObject({
      status: 200,
      json: { version: 3, removed: [laptop.deviceId] },
    });
    const after = await claim(dir.url, alice.acct);
    expect(after.key_packages.map((k) => k.device_id)).toEqual([phone.deviceId]);
    expect(after.exhausted).toEqual([]);
    const listed = (await call(dir.url, `/v1/accounts/${alice.acct}/devices`)).json as AccountDevices;
    expect(listed.device_list).toBe(b64(v3));
    expect(listed.devices.map((d) => d.device_id)).toEqual([phone.deviceId]);
    expect(await upload(dir.url, laptop, alice.token)).toMatchObject({
      status: 404,
      json: { error: "unknown_device" },
    });
    expect(await register(dir.url, laptop, alice.token)).toMatchObject({
      status: 403,
      json: { error: "device_not_listed" },
    });
  });

  it("accepts a key change without continuity (registrations by the old key go), keeps and serves a continuity statement", async () => {
    const carol = account("carol");
    const d1 = await createTestDevice(carol.acct);
    const keyA = d1.account;
    const [keyB, keyC, keyD] = await Promise.all([1, 2, 3].map(() => generateSigningKeyPair()));
    expect(
      (await putList(dir.url, carol.acct, carol.token, await listOf(carol.identity, keyA, 1, [d1]))).status,
    ).toBe(200);
    expect((await register(dir.url, d1, carol.token)).status).toBe(201);

    // DIR-5 on upload: a KeyPackage whose certificate is by a key the list does not know.
    const rogue = await createTestDevice(carol.acct, { key: d1.key });
    expect(await upload(dir.url, d1, carol.token, rogue.certificate)).toMatchObject({
      status: 400,
      json: { error: "invalid_certificate", field: "key_packages", index: 0 },
    });

    // I5: key B without a continuity statement is accepted; d1's certificate by A no longer counts.
    const v2 = await listOf(carol.identity, keyB!, 2, [d1]);
    expect(await putList(dir.url, carol.acct, carol.token, v2)).toMatchObject({
      status: 200,
      json: { version: 2, removed: [d1.deviceId] },
    });
    expect(await register(dir.url, d1, carol.token)).toMatchObject({
      status: 400,
      json: { error: "invalid_certificate" },
    });
    const d1b = await createTestDevice(carol.acct, { account: keyB!, key: d1.key });
    expect((await register(dir.url, d1b, carol.token)).status).toBe(201);
    expect((await call(dir.url, `/v1/accounts/${carol.acct}/devices`)).json.key_rotations).toEqual([]);

    // Key C with a statement B→C: stored and served; d1's certificate by B stays valid through it.
    const rotation = await signKeyRotation({
      identity: carol.identity,
      oldKey: keyB!,
      newKey: keyC!.publicKey,
    });
    const v3 = await listOf(carol.identity, keyC!, 3, [d1]);
    expect(await putList(dir.url, carol.acct, carol.token, v3, rotation)).toMatchObject({
      status: 200,
      json: { version: 3, removed: [] },
    });
    const served = (await call(dir.url, `/v1/accounts/${carol.acct}/devices`)).json;
    expect(served).toMatchObject({ device_list: b64(v3), key_rotations: [b64(rotation)] });
    expect(served.devices).toEqual([{ device_id: d1.deviceId, certificate: b64(d1b.certificate) }]);
    expect((await upload(dir.url, d1b, carol.token)).status).toBe(200);

    // A statement that does not link the stored key (C) to the new one, or sent without a key change.
    const wrongLink = await signKeyRotation({
      identity: carol.identity,
      oldKey: keyA,
      newKey: keyD!.publicKey,
    });
    const v4d = await listOf(carol.identity, keyD!, 4, [d1]);
    expect(await putList(dir.url, carol.acct, carol.token, v4d, wrongLink)).toMatchObject({
      status: 400,
      json: { error: "invalid_key_rotation" },
    });
    const needless = await signKeyRotation({
      identity: carol.identity,
      oldKey: keyC!,
      newKey: keyD!.publicKey,
    });
    const v4c = await listOf(carol.identity, keyC!, 4, [d1]);
    expect(await putList(dir.url, carol.acct, carol.token, v4c, needless)).toMatchObject({
      status: 400,
      json: { error: "invalid_key_rotation" },
    });
    expect((await call(dir.url, `/v1/accounts/${carol.acct}/devices`)).json.device_list).toBe(b64(v3));
  });

  it("refuses another account's list or path, and lists that do not verify", async () => {
    const dave = account("dave");
    const erin = account("erin");
    const key = await generateSigningKeyPair();
    const davesList = await listOf(dave.identity, key, 1, []);
    expect(await putList(dir.url, erin.acct, erin.token, davesList)).toMatchObject({
      status: 403,
      json: { error: "acct_mismatch" },
    });
    expect(await putList(dir.url, dave.acct, erin.token, davesList)).toMatchObject({
      status: 403,
      json: { error: "acct_mismatch" },
    });
    const forged = davesList.slice();
    forged[forged.length - 1]! ^= 1;
    for (const bad of [davesList.slice(0, davesList.length - 3), forged, new Uint8Array(40).fill(3)]) {
      expect(await putList(dir.url, dave.acct, dave.token, bad)).toMatchObject({
        status: 400,
        json: { error: "invalid_device_list" },
      });
    }
    expect(await putList(dir.url, dave.acct, dave.token, davesList, new Uint8Array([1, 2, 3]))).toMatchObject(
      { status: 400, json: { error: "invalid_key_rotation" } },
    );
    const tooBig = b64(new Uint8Array(8 * 1024 + 1));
    const oversized = await call(dir.url, `/v1/accounts/${dave.acct}/device-list`, {
      method: "PUT",
      token: dave.token,
      body: { device_list: tooBig },
    });
    expect(oversized.status).toBeGreaterThanOrEqual(400);
    expect(oversized.status).toBeLessThan(500);
    expect(["invalid_body", "payload_too_large"]).toContain(oversized.json.error);
    const huge = await call(dir.url, `/v1/accounts/${dave.acct}/device-list`, {
      method: "PUT",
      token: dave.token,
      raw: JSON.stringify({ device_list: "A".repeat(20_000) }),
      headers: { "content-type": "application/json" },
    });
    expect(huge).toMatchObject({ status: 413, json: { error: "payload_too_large" } });
    expect(
      await call(dir.url, `/v1/accounts/${dave.acct}/device-list`, {
        method: "PUT",
        body: { device_list: b64(davesList) },
      }),
    ).toMatchObject({ status: 401, json: { error: "unauthorized" } });
    expect((await call(dir.url, `/v1/accounts/${dave.acct}/devices`)).json.device_list).toBeNull();
  });
});

describe("DEVICE_LIST_REQUIRED", () => {
  let shared: MemoryDirectoryStore;
  let lax: RunningDirectory;
  let strict: RunningDirectory;
  beforeAll(async () => {
    // Two directories on one store: as before lists (false, the default) and requiring them (true).
    shared = new MemoryDirectoryStore();
    [lax, strict] = await Promise.all([
      startDirectory(mastodon.url, {}, { store: shared }),
      startDirectory(mastodon.url, { DEVICE_LIST_REQUIRED: "true" }, { store: shared }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([lax.close(), strict.close()]);
  });

  it("false: accounts without a list register, upload and are claimed; true: only once they publish one", async () => {
    const frank = account("frank");
    const phone = await createTestDevice(frank.acct);
    const tablet = await createTestDevice(frank.acct, { account: phone.account });
    expect((await register(lax.url, phone, frank.token)).status).toBe(201);
    expect((await upload(lax.url, phone, frank.token)).status).toBe(200);
    expect((await upload(lax.url, phone, frank.token)).status).toBe(200);
    expect(await claim(lax.url, frank.acct)).toMatchObject({ status: "ok" });

    expect(await register(strict.url, tablet, frank.token)).toMatchObject({
      status: 403,
      json: { error: "device_not_listed" },
    });
    expect(await upload(strict.url, phone, frank.token)).toMatchObject({
      status: 403,
      json: { error: "device_not_listed" },
    });
    expect(await claim(strict.url, frank.acct)).toEqual({
      acct: frank.acct,
      status: "no_devices",
      key_packages: [],
      exhausted: [],
    });

    // The list keeps the phone's registration (registered before it) and lets the tablet in.
    const v1 = await listOf(`acct:${frank.acct}`, phone.account, 1, [phone, tablet]);
    expect(await putList(strict.url, frank.acct, frank.token, v1)).toMatchObject({
      status: 200,
      json: { version: 1, removed: [] },
    });
    expect((await register(strict.url, tablet, frank.token)).status).toBe(201);
    expect((await upload(strict.url, tablet, frank.token)).status).toBe(200);
    expect(await claimedDevices(strict.url, frank.acct)).toEqual([phone.deviceId, tablet.deviceId].sort());
  });

  it("false: a first list removes the registrations it does not name", async () => {
    const gina = account("gina");
    const kept = await createTestDevice(gina.acct);
    const dropped = await createTestDevice(gina.acct, { account: kept.account });
    for (const d of [kept, dropped]) {
      expect((await register(lax.url, d, gina.token)).status).toBe(201);
      expect((await upload(lax.url, d, gina.token)).status).toBe(200);
    }
    const v1 = await listOf(`acct:${gina.acct}`, kept.account, 1, [kept]);
    expect(await putList(lax.url, gina.acct, gina.token, v1)).toMatchObject({
      status: 200,
      json: { removed: [dropped.deviceId] },
    });
    expect(await claimedDevices(lax.url, gina.acct)).toEqual([kept.deviceId]);
  });
});

describe("two concurrent PUTs of the same next version (Redis)", () => {
  it("exactly one wins; the other is refused as stale after checking again", async () => {
    const connection = connectRedis(redis.url, silentLogger());
    connections.push(connection);
    const inner = new RedisDirectoryStore(connection, `${redis.keyPrefix}race:`);
    // Both requests read the stored list before either writes: a barrier on the first two reads.
    let arrivals: (() => void)[] = [];
    let armed = 0;
    const racing: DirectoryStore = Object.assign(Object.create(inner) as DirectoryStore, {
      async getDeviceList(acct: string) {
        const stored = await inner.getDeviceList(acct);
        if (armed > 0) {
          armed -= 1;
          await new Promise<void>((resolve) => {
            arrivals.push(resolve);
            if (arrivals.length === 2) {
              for (const go of arrivals) go();
              arrivals = [];
            }
          });
        }
        return stored;
      },
    });
    const dir = await startDirectory(
      mastodon.url,
      { STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: `${redis.keyPrefix}race:` },
      { store: racing },
    );
    try {
      const hana = account("hana");
      const a = await createTestDevice(hana.acct);
      const b = await createTestDevice(hana.acct, { account: a.account });
      const v1 = await listOf(hana.identity, a.account, 1, [a]);
      expect((await putList(dir.url, hana.acct, hana.token, v1)).status).toBe(200);

      const withB = await listOf(hana.identity, a.account, 2, [a, b]);
      const withoutA = await listOf(hana.identity, a.account, 2, [b]);
      armed = 2;
      const answers = await Promise.all([
        putList(dir.url, hana.acct, hana.token, withB),
        putList(dir.url, hana.acct, hana.token, withoutA),
      ]);
      expect(armed).toBe(0);
      const statuses = answers.map((r) => r.status).sort();
      expect(statuses).toEqual([200, 409]);
      expect(answers.find((r) => r.status === 409)?.json.error).toBe("stale_device_list");
      const winner = answers[0].status === 200 ? withB : withoutA;
      expect((await call(dir.url, `/v1/accounts/${hana.acct}/devices`)).json.device_list).toBe(b64(winner));
    } finally {
      await dir.close();
    }
  });
});
