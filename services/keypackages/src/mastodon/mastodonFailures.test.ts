import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { freePort } from "@mastodon-mls/testkit";
import { b64, createTestDevice } from "../testing/devices.js";
import { call, startDirectory, startMastodon, type RunningDirectory } from "../testing/harness.js";

// An unreachable or failing instance is `502 mastodon_unavailable`, never a bad token.

let mastodon: DevMastodon;
let dir: RunningDirectory;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  // No INSTANCE_DOMAIN: the directory reads it from the instance. A short timeout keeps "hang" quick.
  dir = await startDirectory(mastodon.url, { MASTODON_TIMEOUT_MS: "300" });
});
afterEach(() => {
  mastodon.fault("none");
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

let n = 0;
async function registration(): Promise<{
  username: string;
  token: string;
  send: () => ReturnType<typeof call>;
}> {
  const username = `m${++n}`;
  mastodon.createAccount({ username });
  const token = mastodon.issueToken({ username, scopes: "read" });
  const device = await createTestDevice(`${username}@a.test`);
  const send = () =>
    call(dir.url, `/v1/devices/${device.deviceId}`, {
      method: "PUT",
      token,
      body: { certificate: b64(device.certificate) },
    });
  return { username, token, send };
}

describe("when Mastodon fails", () => {
  it.each(["html502", "500", "503", "reset", "hang"] as const)("answers 502 for fault %s", async (fault) => {
    const { send } = await registration();
    mastodon.fault(fault);
    const res = await send();
    expect(res).toMatchObject({ status: 502, json: { error: "mastodon_unavailable" } });
    mastodon.fault("none");
    expect((await send()).status).toBe(201);
  });

  it("says so when the instance does not answer in time", async () => {
    const { send } = await registration();
    mastodon.fault("hang");
    expect((await send()).json.message).toMatch(/in time/);
  });

  it("trusts a verified token for a while, under a hash of it", async () => {
    const { token, send } = await registration();
    expect((await send()).status).toBe(201);
    mastodon.fault("html502");
    expect((await send()).status).toBe(200);
    const cache = (dir.directory.context.tokens as unknown as { cache: Map<string, unknown> }).cache;
    expect(cache.size).toBeGreaterThan(0);
    for (const key of cache.keys()) expect(key).not.toContain(token);
  });

  it("answers 502 when nothing listens at MASTODON_URL", async () => {
    const nowhere = await startDirectory(`http://127.0.0.1:${await freePort()}`, {
      INSTANCE_DOMAIN: "a.test",
    });
    try {
      const device = await createTestDevice("x@a.test");
      const res = await call(nowhere.url, `/v1/devices/${device.deviceId}`, {
        method: "PUT",
        token: "a".repeat(43),
        body: { certificate: b64(device.certificate) },
      });
      expect(res).toMatchObject({ status: 502, json: { error: "mastodon_unavailable" } });
      // Routes that need no token keep working without the instance.
      expect(await call(nowhere.url, "/v1/accounts/x@a.test/devices")).toMatchObject({ status: 200 });
    } finally {
      await nowhere.close();
    }
  });
});

describe("the instance domain", () => {
  it("is read from the instance when not configured, and a failed read is retried", async () => {
    const fresh = await startDirectory(mastodon.url);
    try {
      mastodon.fault("html502", { pathPrefix: "/api/v2/instance" });
      expect(await call(fresh.url, "/v1/accounts/x@a.test/devices")).toMatchObject({
        status: 502,
        json: { error: "mastodon_unavailable" },
      });
      mastodon.fault("none");
      expect(await call(fresh.url, "/v1/accounts/x@a.test/devices")).toMatchObject({ status: 200 });
      expect(await call(fresh.url, "/v1/accounts/x@b.test/devices")).toMatchObject({ status: 404 });
    } finally {
      await fresh.close();
    }
  });

  it("comes from INSTANCE_DOMAIN when configured, which may differ from the API host", async () => {
    const configured = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "Social.Example" });
    try {
      expect(await call(configured.url, "/v1/accounts/x@social.example/devices")).toMatchObject({
        status: 200,
      });
      expect(await call(configured.url, "/v1/accounts/x@a.test/devices")).toMatchObject({
        status: 404,
        json: { error: "foreign_account" },
      });
    } finally {
      await configured.close();
    }
  });
});
