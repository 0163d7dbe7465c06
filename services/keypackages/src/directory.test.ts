import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { parseKeyPackage } from "@mastodon-mls/bridge";
import { fromBase64url } from "@mastodon-mls/protocol";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, deviceSigned, keyPackagesOf, keyPackageOf } from "./testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "./testing/harness.js";

let mastodon: DevMastodon;
let redis: RedisHandle;

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
});
afterAll(async () => {
  await Promise.all([mastodon.close(), redis.stop()]);
});

describe.each(["memory", "redis"] as const)("the directory over HTTP, %s store", (store) => {
  let dir: RunningDirectory;
  beforeAll(async () => {
    dir = await startDirectory(
      mastodon.url,
      store === "redis"
        ? {
            STORE: "redis",
            REDIS_URL: redis.url,
            REDIS_PREFIX: `${redis.keyPrefix}kp:`,
            DELIVERY_URL: "https://hub.a.test",
          }
        : { DELIVERY_URL: "https://hub.a.test" },
    );
  });
  afterAll(async () => {
    await dir.close();
  });

  it("registers a device, takes its KeyPackages, counts them and hands them out", async () => {
    const alice = await createMember(mastodon, dir.url, `alice_${store}`);
    const bob = await createMember(mastodon, dir.url, `bob_${store}`);
    const { device, token } = alice;

    const again = await call(dir.url, `/v1/devices/${device.deviceId}`, {
      method: "PUT",
      token,
      body: { certificate: b64(device.certificate) },
    });
    expect(again).toMatchObject({ status: 200, json: { acct: alice.acct, device_id: device.deviceId } });

    const kps = await keyPackagesOf(device, 2);
    const lastResort = await keyPackageOf(device, { lastResort: true });
    const upload = await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, {
      token,
      body: { key_packages: kps.map((k) => b64(k.encoded)), last_resort: b64(lastResort.encoded) },
    });
    expect(upload).toMatchObject({ status: 200, json: { stored: 3, count: 2, last_resort: true } });
    const reupload = await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, {
      token,
      body: { key_packages: [b64(kps[0]!.encoded)] },
    });
    expect(reupload.json).toEqual({ stored: 0, count: 2, last_resort: true });

    const countPath = `/v1/devices/${device.deviceId}/keypackages/count`;
    const count = await call(
      dir.url,
      countPath,
      await deviceSigned(device, { origin: PUBLIC_URL, method: "GET", path: countPath }),
    );
    expect(count).toMatchObject({ status: 200, json: { count: 2, last_resort: true } });

    const listed = await call(dir.url, `/v1/accounts/${alice.acct}/devices`);
    expect(listed).toMatchObject({
      status: 200,
      json: {
        acct: alice.acct,
        device_list: null,
        devices: [{ device_id: device.deviceId, certificate: b64(device.certificate) }],
        key_rotations: [],
      },
    });

    const handedOut = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const claimer =
        i % 2 === 0 ? bob.device : (await createMember(mastodon, dir.url, `c${i}_${store}`)).device;
      // bob repeats one intent (the same claim_id); the others claim without one.
      const body = {
        ciphersuite: 1,
        accounts: [`@${alice.acct.toUpperCase()}`, alice.acct],
        ...(i % 2 === 0 ? { claim_id: "bob-adds-alice-to-g1" } : {}),
      };
      const claim = await call(dir.url, "/v1/claims", {
        method: "POST",
        ...(await deviceSigned(claimer, { origin: PUBLIC_URL, method: "POST", path: "/v1/claims", body })),
      });
      expect(claim.status).toBe(200);
      expect(claim.json.accounts).toHaveLength(1);
      const [result] = claim.json.accounts;
      expect(result).toMatchObject({ acct: alice.acct, status: "ok", exhausted: [] });
      expect(result.key_packages).toHaveLength(1);
      const kp = result.key_packages[0];
      expect(kp.device_id).toBe(device.deviceId);
      const verified = await parseKeyPackage(fromBase64url(kp.key_package as string));
      expect(verified.acct).toBe(alice.acct);
      expect(kp.last_resort).toBe(i === 3);
      expect(verified.lastResort).toBe(i === 3);
      if (i < 3) handedOut.add(verified.ref);
    }
    // Bob claimed twice within ten minutes with the same claim_id (i = 0 and i = 2) and was given the same KeyPackage again;
    // the last claim found the ordinary ones gone and got the last-resort one.
    expect(handedOut.size).toBe(2);

    const after = await call(
      dir.url,
      countPath,
      await deviceSigned(device, { origin: PUBLIC_URL, method: "GET", path: countPath }),
    );
    expect(after.json).toEqual({ count: 0, last_resort: true });

    const metrics = await call(dir.url, "/metrics");
    expect(metrics.json).toMatch(/keypackages_handed_out_total\{kind="ordinary"\} 2/);
    expect(metrics.json).toMatch(/keypackages_handed_out_total\{kind="last_resort"\} 1/);
    expect(metrics.json).toMatch(/keypackages_claim_replays_total 1/);
    expect(metrics.json).toMatch(/keypackages_stored_total 3/);
  });

  it("repeats a claim only for the same claim_id: another intent of the same requester gets a fresh KeyPackage (D1)", async () => {
    const frank = await createMember(mastodon, dir.url, `frank_${store}`);
    const gina = await createMember(mastodon, dir.url, `gina_${store}`);
    const kps = await keyPackagesOf(frank.device, 3);
    await call(dir.url, `/v1/devices/${frank.device.deviceId}/keypackages`, {
      token: frank.token,
      body: { key_packages: kps.map((k) => b64(k.encoded)) },
    });
    const claimOnce = async (claimId?: string) => {
      const body = { ciphersuite: 1, accounts: [frank.acct], ...(claimId ? { claim_id: claimId } : {}) };
      const r = await call(dir.url, "/v1/claims", {
        method: "POST",
        ...(await deviceSigned(gina.device, {
          origin: PUBLIC_URL,
          method: "POST",
          path: "/v1/claims",
          body,
        })),
      });
      expect(r.status).toBe(200);
      return r.json.accounts[0].key_packages[0].key_package as string;
    };
    const groupOne = await claimOnce("adds-frank-to-group-one");
    expect(await claimOnce("adds-frank-to-group-one")).toBe(groupOne);
    const groupTwo = await claimOnce("adds-frank-to-group-two");
    expect(groupTwo).not.toBe(groupOne);
    const noId = await claimOnce();
    expect(new Set([groupOne, groupTwo, noId]).size).toBe(3);

    const bad = { ciphersuite: 1, accounts: [frank.acct], claim_id: "short" };
    const refused = await call(dir.url, "/v1/claims", {
      method: "POST",
      ...(await deviceSigned(gina.device, {
        origin: PUBLIC_URL,
        method: "POST",
        path: "/v1/claims",
        body: bad,
      })),
    });
    expect(refused).toMatchObject({ status: 400, json: { error: "invalid_body" } });
  });

  it("answers claims for foreign accounts, accounts without devices and exhausted devices", async () => {
    const carol = await createMember(mastodon, dir.url, `carol_${store}`);
    const dave = await createMember(mastodon, dir.url, `dave_${store}`, { register: false });
    const erin = await createMember(mastodon, dir.url, `erin_${store}`);
    const body = { ciphersuite: 1, accounts: ["zed@b.test", dave.acct, carol.acct] };
    const claim = await call(dir.url, "/v1/claims", {
      method: "POST",
      ...(await deviceSigned(erin.device, { origin: PUBLIC_URL, method: "POST", path: "/v1/claims", body })),
    });
    expect(claim).toMatchObject({
      status: 200,
      json: {
        accounts: [
          { acct: "zed@b.test", status: "foreign", key_packages: [], exhausted: [] },
          { acct: dave.acct, status: "no_devices", key_packages: [], exhausted: [] },
          { acct: carol.acct, status: "ok", key_packages: [], exhausted: [carol.device.deviceId] },
        ],
      },
    });
  });

  it("serves the operational routes", async () => {
    expect(await call(dir.url, "/healthz")).toMatchObject({ status: 200, json: { status: "ok" } });
    expect(await call(dir.url, "/readyz")).toMatchObject({ status: 200, json: { status: "ok" } });
    expect(await call(dir.url, "/.well-known/mls-services")).toMatchObject({
      status: 200,
      json: { directory: PUBLIC_URL, delivery: "https://hub.a.test" },
    });
    const openapi = await call(dir.url, "/openapi.json");
    expect(Object.keys(openapi.json.paths as Record<string, unknown>).sort()).toEqual(
      [
        "/healthz",
        "/readyz",
        "/.well-known/mls-services",
        "/v1/devices/{deviceId}",
        "/v1/devices/{deviceId}/keypackages",
        "/v1/devices/{deviceId}/keypackages/count",
        "/v1/accounts/{acct}/device-list",
        "/v1/accounts/{acct}/devices",
        "/v1/accounts/{acct}/keypackages",
        "/v1/claims",
        "/metrics",
        "/openapi.json",
      ].sort(),
    );
    const claimBody = openapi.json.paths["/v1/claims"].post.requestBody.content["application/json"].schema;
    expect(claimBody.properties.accounts.maxItems).toBe(64);
  });
});
