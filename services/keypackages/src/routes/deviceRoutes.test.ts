import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { b64, createTestDevice } from "../testing/devices.js";
import {
  call,
  createMember,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "../testing/harness.js";

let mastodon: DevMastodon;
let dir: RunningDirectory;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  dir = await startDirectory(mastodon.url, {}, { storeLimits: { devicesPerAccount: 2 } });
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

let n = 0;
function account(scopes = "read write"): { username: string; acct: string; token: string } {
  n += 1;
  const username = `user${n}`;
  mastodon.createAccount({ username });
  return { username, acct: `${username}@a.test`, token: mastodon.issueToken({ username, scopes }) };
}

function register(deviceId: string, certificate: Uint8Array | string, token?: string) {
  return call(dir.url, `/v1/devices/${deviceId}`, {
    method: "PUT",
    ...(token === undefined ? {} : { token }),
    body: { certificate: typeof certificate === "string" ? certificate : b64(certificate) },
  });
}

describe("PUT /v1/devices/:deviceId", () => {
  it("accepts the same certificate again and a renewed one for the same key, and lists the latest", async () => {
    const alice = account();
    const device = await createTestDevice(alice.acct);
    expect((await register(device.deviceId, device.certificate, alice.token)).status).toBe(201);
    expect((await register(device.deviceId, device.certificate, alice.token)).status).toBe(200);
    const renewed = await createTestDevice(alice.acct, { account: device.account, key: device.key });
    const replaced = await register(device.deviceId, renewed.certificate, alice.token);
    expect(replaced).toMatchObject({ status: 200, json: { acct: alice.acct, device_id: device.deviceId } });
    const listed = await call(dir.url, `/v1/accounts/${alice.acct}/devices`);
    expect(listed.json.devices).toEqual([
      { device_id: device.deviceId, certificate: b64(renewed.certificate) },
    ]);
  });

  it("refuses a certificate of another account than the token's", async () => {
    const alice = account();
    const bob = account();
    const device = await createTestDevice(alice.acct);
    const res = await register(device.deviceId, device.certificate, bob.token);
    expect(res).toMatchObject({ status: 403, json: { error: "acct_mismatch" } });
    expect((await call(dir.url, `/v1/accounts/${alice.acct}/devices`)).json.devices).toEqual([]);
    expect((await call(dir.url, `/v1/accounts/${bob.acct}/devices`)).json.devices).toEqual([]);
  });

  it("refuses a certificate for another device id than the path's", async () => {
    const alice = account();
    const device = await createTestDevice(alice.acct);
    const other = await createTestDevice(alice.acct);
    const res = await register(other.deviceId, device.certificate, alice.token);
    expect(res).toMatchObject({ status: 403, json: { error: "device_mismatch" } });
  });

  it("refuses certificates that do not verify: garbage, a forged signature, expired, non-canonical acct", async () => {
    const alice = account();
    const device = await createTestDevice(alice.acct);
    const forged = device.certificate.slice();
    forged[forged.length - 1]! ^= 1;
    const expired = await createTestDevice(alice.acct, {
      notBefore: Math.floor(Date.now() / 1000) - 7200,
      notAfter: Math.floor(Date.now() / 1000) - 3600,
    });
    const shouting = await createTestDevice(alice.acct, {
      identity: `acct:${alice.username.toUpperCase()}@a.test`,
    });
    for (const [id, cert] of [
      [device.deviceId, new Uint8Array(100).fill(7)],
      [device.deviceId, forged],
      [expired.deviceId, expired.certificate],
      [shouting.deviceId, shouting.certificate],
    ] as const) {
      const res = await register(id, cert, alice.token);
      expect(res).toMatchObject({ status: 400, json: { error: "invalid_certificate" } });
    }
    const nonCanonical = await register(device.deviceId, "AB", alice.token);
    expect(nonCanonical).toMatchObject({ status: 400, json: { error: "invalid_encoding" } });
  });

  it("limits the devices of an account", async () => {
    const alice = account();
    for (let i = 0; i < 2; i++) {
      const d = await createTestDevice(alice.acct);
      expect((await register(d.deviceId, d.certificate, alice.token)).status).toBe(201);
    }
    const third = await createTestDevice(alice.acct);
    const res = await register(third.deviceId, third.certificate, alice.token);
    expect(res).toMatchObject({ status: 400, json: { error: "too_many_items" } });
    expect(res.json.message).toMatch(/at most 2 devices/);
  });

  it("needs a valid user token with a scope that reads the account", async () => {
    const alice = account();
    const device = await createTestDevice(alice.acct);
    const attempt = (token?: string, headers: Record<string, string> = {}) =>
      call(dir.url, `/v1/devices/${device.deviceId}`, {
        method: "PUT",
        ...(token === undefined ? {} : { token }),
        headers,
        body: { certificate: b64(device.certificate) },
      });
    expect(await attempt()).toMatchObject({ status: 401, json: { error: "unauthorized" } });
    expect(await attempt(undefined, { authorization: "Basic YWxpY2U6cHc=" })).toMatchObject({
      status: 401,
      json: { error: "invalid_token" },
    });
    expect(await attempt("not a token")).toMatchObject({ status: 401, json: { error: "invalid_token" } });
    expect(await attempt("x".repeat(43))).toMatchObject({ status: 401, json: { error: "invalid_token" } });

    const revoked = mastodon.issueToken({ username: alice.username, scopes: "read" });
    mastodon.revokeToken(revoked);
    expect(await attempt(revoked)).toMatchObject({ status: 401, json: { error: "invalid_token" } });

    const appOnly = await attempt(mastodon.issueAppToken({ scopes: "read" }));
    expect(appOnly).toMatchObject({ status: 401, json: { error: "invalid_token" } });
    expect(appOnly.json.message).toMatch(/user token/);

    const wrongScope = mastodon.issueToken({
      username: alice.username,
      scopes: "write:statuses",
      app: "poster",
    });
    expect(await attempt(wrongScope)).toMatchObject({ status: 403, json: { error: "insufficient_scope" } });

    const profileOnly = mastodon.issueToken({ username: alice.username, scopes: "profile", app: "profiler" });
    expect((await attempt(profileOnly)).status).toBe(201);

    const suspended = account();
    const theirs = await createTestDevice(suspended.acct);
    mastodon.suspend(suspended.username);
    const res = await register(theirs.deviceId, theirs.certificate, suspended.token);
    expect(res).toMatchObject({ status: 403, json: { error: "forbidden" } });
  });
});

describe("GET /v1/accounts/:acct/devices", () => {
  it("canonicalises the handle and refuses other instances' accounts and garbage", async () => {
    const member = await createMember(mastodon, dir.url, "listed");
    const res = await call(dir.url, `/v1/accounts/${encodeURIComponent("@LISTED@A.test")}/devices`);
    expect(res).toMatchObject({ status: 200, json: { acct: "listed@a.test" } });
    const devices = res.json.devices as { device_id: string }[];
    expect(devices.map((d) => d.device_id)).toEqual([member.device.deviceId]);
    expect(await call(dir.url, "/v1/accounts/listed@b.test/devices")).toMatchObject({
      status: 404,
      json: { error: "foreign_account" },
    });
    expect(await call(dir.url, "/v1/accounts/no-at-sign/devices")).toMatchObject({
      status: 400,
      json: { error: "invalid_acct" },
    });
    expect(await call(dir.url, "/v1/accounts/nobody@a.test/devices")).toMatchObject({
      status: 200,
      json: { acct: "nobody@a.test", devices: [] },
    });
  });
});
