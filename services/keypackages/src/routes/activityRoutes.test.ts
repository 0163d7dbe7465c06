import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { KeyPackageCollection } from "@mastodon-mls/protocol";
import { b64, createTestDevice, deviceSigned, keyPackagesOf } from "../testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "../testing/harness.js";
import { acceptsActivityJson } from "./activityRoutes.js";

let mastodon: DevMastodon;
let dir: RunningDirectory;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  dir = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "a.test" });
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

const AS = { accept: "application/activity+json" };

describe("GET /v1/accounts/:acct/keypackages (ActivityStreams)", () => {
  it("lists the account's devices as KeyPackage items linking to claims, and hands nothing out", async () => {
    const alice = await createMember(mastodon, dir.url, "alice", { keyPackages: 3, lastResort: true });
    const laptop = await createTestDevice(alice.acct, { account: alice.device.account });
    await call(dir.url, `/v1/devices/${laptop.deviceId}`, {
      method: "PUT",
      token: alice.token,
      body: { certificate: b64(laptop.certificate) },
    });
    const uploaded = await keyPackagesOf(laptop, 2);
    await call(dir.url, `/v1/devices/${laptop.deviceId}/keypackages`, {
      token: alice.token,
      body: { key_packages: uploaded.map((k) => b64(k.encoded)) },
    });

    const res = await call(dir.url, `/v1/accounts/@Alice@A.test/keypackages`, { headers: AS });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/activity+json; charset=utf-8");
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    const collection = KeyPackageCollection.parse(res.json);
    const id = `${PUBLIC_URL}/v1/accounts/alice@a.test/keypackages`;
    expect(collection).toMatchObject({
      "@context": ["https://www.w3.org/ns/activitystreams", "https://purl.archive.org/socialweb/mls"],
      id,
      type: "Collection",
      attributedTo: "acct:alice@a.test",
      totalItems: 2,
    });
    // Compared in device-id order (the listing itself is oldest registration first, as /devices).
    const byName = [...collection.items].sort((x, y) => (x.name < y.name ? -1 : 1));
    expect(byName).toEqual(
      [alice.device.deviceId, laptop.deviceId].sort().map((deviceId) => ({
        id: `${id}#${deviceId}`,
        type: "KeyPackage",
        attributedTo: "acct:alice@a.test",
        mediaType: "message/mls",
        name: deviceId,
        url: { type: "Link", href: `${PUBLIC_URL}/v1/claims`, mediaType: "application/json" },
      })),
    );
    // No KeyPackage bytes, and reading it (however often) consumes nothing.
    const text = JSON.stringify(res.json);
    expect(text).not.toContain('"content"');
    for (const kp of uploaded) expect(text).not.toContain(b64(kp.encoded).slice(0, 64));
    for (let i = 0; i < 3; i++) await call(dir.url, `/v1/accounts/alice@a.test/keypackages`, { headers: AS });
    const path = `/v1/devices/${laptop.deviceId}/keypackages/count`;
    const left = await call(
      dir.url,
      path,
      await deviceSigned(laptop, { origin: PUBLIC_URL, method: "GET", path }),
    );
    expect(left.json).toEqual({ count: 2, last_resort: false });
  });

  it("negotiates the media type", async () => {
    const path = "/v1/accounts/nobody@a.test/keypackages";
    for (const accept of [
      'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
      "application/json",
      "*/*",
      "text/html, application/activity+json;q=0.5",
    ]) {
      const res = await call(dir.url, path, { headers: { accept } });
      expect(res.status, accept).toBe(200);
      expect(res.json).toMatchObject({ type: "Collection", totalItems: 0, items: [] });
    }
    expect(await call(dir.url, path, { headers: { accept: "text/html" } })).toMatchObject({
      status: 406,
      json: { error: "not_acceptable" },
    });
  });

  it("refuses foreign and malformed handles", async () => {
    expect(await call(dir.url, "/v1/accounts/zed@b.test/keypackages", { headers: AS })).toMatchObject({
      status: 404,
      json: { error: "foreign_account" },
    });
    expect(await call(dir.url, "/v1/accounts/no-at-sign/keypackages", { headers: AS })).toMatchObject({
      status: 400,
      json: { error: "invalid_acct" },
    });
  });

  it("reads Accept like HTTP does", () => {
    expect(acceptsActivityJson(undefined)).toBe(true);
    expect(acceptsActivityJson("")).toBe(true);
    expect(acceptsActivityJson("Application/Activity+JSON")).toBe(true);
    expect(acceptsActivityJson("application/*;q=0.1")).toBe(true);
    expect(acceptsActivityJson("application/activity+json;q=0")).toBe(false);
    expect(acceptsActivityJson("text/html, image/png")).toBe(false);
  });
});
