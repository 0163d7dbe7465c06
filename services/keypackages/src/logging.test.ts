import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { createRootLogger } from "@mastodon-mls/service-kit";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, createTestDevice, deviceSigned, keyPackagesOf } from "./testing/devices.js";
import { PUBLIC_URL, call, startDirectory, startMastodon, type RunningDirectory } from "./testing/harness.js";

// DESIGN §10: logs never carry tokens, keys or contents. Everything the directory logs at the most
// verbose level during a registration, an upload, a claim, their refusals and a Mastodon outage is
// captured and searched for every secret and every KeyPackage that went through.

let mastodon: DevMastodon;
let redis: RedisHandle;
let dir: RunningDirectory;
const lines: string[] = [];

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      done();
    },
  });
  const logger = createRootLogger({ level: "trace", name: "keypackages" }, sink);
  dir = await startDirectory(
    mastodon.url,
    {
      STORE: "redis",
      REDIS_URL: redis.url,
      REDIS_PREFIX: `${redis.keyPrefix}kp:`,
      LOG_LEVEL: "trace",
      RATE_LIMIT_ACCOUNT_MAX: "3",
    },
    { logger },
  );
});
afterAll(async () => {
  await dir.close();
  await Promise.all([mastodon.close(), redis.stop()]);
});

describe("the logs", () => {
  it("carry no token, no Authorization value and no KeyPackage, whatever happens", async () => {
    mastodon.createAccount({ username: "alice" });
    const token = mastodon.issueToken({ username: "alice", scopes: "read write" });
    const device = await createTestDevice("alice@a.test");
    const kps = await keyPackagesOf(device, 3);
    const [lastResort] = await keyPackagesOf(device, 1, { lastResort: true });
    const secrets: string[] = [token, b64(device.certificate)];

    expect(
      await call(dir.url, `/v1/devices/${device.deviceId}`, {
        method: "PUT",
        token,
        body: { certificate: b64(device.certificate) },
      }),
    ).toMatchObject({ status: 201 });
    const body = { key_packages: kps.map((k) => b64(k.encoded)), last_resort: b64(lastResort!.encoded) };
    secrets.push(...body.key_packages, body.last_resort);
    expect(await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, { token, body })).toMatchObject({
      status: 200,
    });

    const bob = await createTestDevice("bob@b.test");
    const claimBody = { ciphersuite: 1, accounts: ["alice@a.test"] };
    const signed = await deviceSigned(bob, {
      origin: PUBLIC_URL,
      method: "POST",
      path: "/v1/claims",
      body: claimBody,
    });
    secrets.push(signed.headers.authorization!);
    const claim = await call(dir.url, "/v1/claims", { method: "POST", ...signed });
    expect(claim.status).toBe(200);
    secrets.push(claim.json.accounts[0].key_packages[0].key_package as string);
    // Refusals: a replay, a bad token, a garbage upload, the rate limit, Mastodon down.
    expect((await call(dir.url, "/v1/claims", { method: "POST", ...signed })).status).toBe(401);
    const wrongToken = `${token}x`;
    secrets.push(wrongToken);
    expect(
      (await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, { token: wrongToken, body })).status,
    ).toBe(401);
    expect(
      (
        await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, {
          token,
          body: { key_packages: [`${body.key_packages[0]!}AAAA`] },
        })
      ).status,
    ).toBe(400);
    expect((await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, { token, body })).status).toBe(
      429,
    );
    mastodon.createAccount({ username: "carol" });
    const carolToken = mastodon.issueToken({ username: "carol", scopes: "read" });
    secrets.push(carolToken);
    mastodon.fault("html502");
    try {
      const down = await call(dir.url, `/v1/devices/${device.deviceId}`, {
        method: "PUT",
        token: carolToken,
        body: { certificate: b64(device.certificate) },
      });
      expect(down.status).toBe(502);
    } finally {
      mastodon.fault("none");
    }

    // The log is there and detailed (trace level), and none of it is secret.
    // Two lines per request at least, and Mastodon's bad answer.
    expect(lines.length).toBeGreaterThanOrEqual(17);
    expect(lines.some((l) => l.includes("mastodon answered badly"))).toBe(true);
    const log = lines.join("\n");
    expect(log).toContain('"statusCode":429');
    expect(log).toContain("/v1/claims");
    for (const secret of secrets) {
      expect(log).not.toContain(secret);
      // Not even a fragment long enough to matter (a key is 43 characters of base64url).
      for (let at = 0; at + 40 <= secret.length; at += 40)
        expect(log).not.toContain(secret.slice(at, at + 40));
    }
    for (const line of lines) {
      expect(line).not.toMatch(/Bearer /i);
      expect(line).not.toMatch(/MLS-Device /);
    }
  });
});
