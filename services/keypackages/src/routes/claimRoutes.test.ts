import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { parseKeyPackage } from "@mastodon-mls/bridge";
import { ClaimResult, ClaimedKeyPackage, fromBase64url } from "@mastodon-mls/protocol";
import { z } from "zod";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { b64, createTestDevice, deviceSigned, keyPackageOf, type TestDevice } from "../testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type RunningDirectory,
} from "../testing/harness.js";

let mastodon: DevMastodon;
let redis: RedisHandle;
let dir: RunningDirectory;
/** The directory's clock, seconds; tests move it forward. */
let clock = Math.floor(Date.now() / 1000);

beforeAll(async () => {
  [mastodon, redis] = await Promise.all([startMastodon("a.test"), startRedis()]);
  dir = await startDirectory(
    mastodon.url,
    { STORE: "redis", REDIS_URL: redis.url, REDIS_PREFIX: `${redis.keyPrefix}kp:` },
    { now: () => clock },
  );
});
afterAll(async () => {
  await dir.close();
  await Promise.all([mastodon.close(), redis.stop()]);
});

async function claim(
  requester: TestDevice,
  accounts: string[],
  opts: { origin?: string; now?: number } = {},
) {
  const body = { ciphersuite: 1, accounts };
  const signed = await deviceSigned(requester, {
    origin: opts.origin ?? PUBLIC_URL,
    method: "POST",
    path: "/v1/claims",
    body,
    now: opts.now ?? clock,
  });
  const answer = await call(dir.url, "/v1/claims", { method: "POST", ...signed });
  // The route writes its 200s without the schema's encoder: every one must still be exactly one.
  if (answer.status === 200) expect(StrictClaimResponse.parse(answer.json)).toEqual(answer.json);
  return { signed, answer };
}

const StrictClaimResponse = z.strictObject({
  accounts: z.array(
    z.strictObject({
      ...ClaimResult.shape,
      key_packages: z.array(z.strictObject(ClaimedKeyPackage.shape)),
    }),
  ),
});

describe("POST /v1/claims", () => {
  it("hands each KeyPackage to exactly one of 50 concurrent requesters, then the last-resort one", async () => {
    const alice = await createMember(mastodon, dir.url, "popular", { keyPackages: 20, lastResort: true });
    // Requesters from anywhere: a certificate is all a device needs to claim.
    const requesters = await Promise.all(
      Array.from({ length: 50 }, (_, i) => createTestDevice(`r${i}@elsewhere.test`)),
    );
    const answers = await Promise.all(requesters.map(async (r) => (await claim(r, [alice.acct])).answer));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const handed = answers.map(
      (a) => a.json.accounts[0].key_packages[0] as { key_package: string; last_resort: boolean },
    );
    const ordinary = handed.filter((k) => !k.last_resort).map((k) => k.key_package);
    const lastResort = handed.filter((k) => k.last_resort).map((k) => k.key_package);
    expect(ordinary).toHaveLength(20);
    expect(new Set(ordinary).size).toBe(20);
    expect(lastResort).toHaveLength(30);
    expect(new Set(lastResort).size).toBe(1);
    expect((await parseKeyPackage(fromBase64url(lastResort[0]!))).lastResort).toBe(true);
  });

  it("never serves an expired KeyPackage", async () => {
    const bob = await createMember(mastodon, dir.url, "shortlived");
    const now = Math.floor(Date.now() / 1000);
    // notBefore is set 300 s in the past by the generator, so this one expires at now + 700.
    const short = await keyPackageOf(bob.device, { lifetimeSeconds: 1000, now });
    const up = await call(dir.url, `/v1/devices/${bob.device.deviceId}/keypackages`, {
      token: bob.token,
      body: { key_packages: [b64(short.encoded)] },
    });
    expect(up.json).toMatchObject({ count: 1 });
    const requester = await createTestDevice("someone@elsewhere.test");
    const saved = clock;
    clock = now + 700;
    try {
      const { answer } = await claim(requester, [bob.acct]);
      expect(answer.json.accounts[0]).toMatchObject({
        status: "ok",
        key_packages: [],
        exhausted: [bob.device.deviceId],
      });
    } finally {
      clock = saved;
    }
    // Even with the clock back, the expired KeyPackage was dropped for good.
    const { answer } = await claim(requester, [bob.acct]);
    expect(answer.json.accounts[0].exhausted).toEqual([bob.device.deviceId]);
  });

  it("does not hand the requesting device its own KeyPackage", async () => {
    const carol = await createMember(mastodon, dir.url, "selfish", { keyPackages: 1 });
    const { answer } = await claim(carol.device, [carol.acct]);
    expect(answer.json.accounts[0]).toEqual({
      acct: carol.acct,
      status: "ok",
      key_packages: [],
      exhausted: [],
    });
  });

  it("refuses a replayed request, a signature for another origin, stale and unsigned requests", async () => {
    const requester = await createTestDevice("replayer@elsewhere.test");
    const { signed, answer } = await claim(requester, ["nobody@a.test"]);
    expect(answer.status).toBe(200);
    const replay = await call(dir.url, "/v1/claims", { method: "POST", ...signed });
    expect(replay).toMatchObject({ status: 401, json: { error: "auth_replayed" } });

    const elsewhere = await claim(requester, ["nobody@a.test"], { origin: "https://kp.b.test" });
    expect(elsewhere.answer).toMatchObject({ status: 401, json: { error: "auth_invalid" } });
    const stale = await claim(requester, ["nobody@a.test"], { now: clock - 3600 });
    expect(stale.answer).toMatchObject({ status: 401, json: { error: "auth_expired" } });

    const body = { ciphersuite: 1, accounts: ["nobody@a.test"] };
    expect(await call(dir.url, "/v1/claims", { body })).toMatchObject({
      status: 401,
      json: { error: "unauthorized" },
    });
    expect(await call(dir.url, "/v1/claims", { body, token: "abc" })).toMatchObject({
      status: 401,
      json: { error: "auth_invalid" },
    });
    // The signature covers the body: the same header on another body does not verify.
    const other = JSON.stringify({ ciphersuite: 1, accounts: ["somebody@a.test"] });
    const swapped = await call(dir.url, "/v1/claims", {
      method: "POST",
      headers: signed.headers,
      raw: other,
    });
    expect(swapped).toMatchObject({ status: 401, json: { error: "auth_invalid" } });
  });

  it("refuses garbage handles, other ciphersuites and too many accounts", async () => {
    const requester = await createTestDevice("picky@elsewhere.test");
    const bad = await claim(requester, ["alice@a.test", "not a handle"]);
    expect(bad.answer).toMatchObject({ status: 400, json: { error: "invalid_acct" } });
    expect(bad.answer.json.message).toMatch(/accounts\[1\]/);
    const tooMany = await claim(
      requester,
      Array.from({ length: 65 }, (_, i) => `u${i}@a.test`),
    );
    expect(tooMany.answer).toMatchObject({ status: 400, json: { error: "invalid_body" } });
    const body = { ciphersuite: 2, accounts: ["alice@a.test"] };
    const signed = await deviceSigned(requester, {
      origin: PUBLIC_URL,
      method: "POST",
      path: "/v1/claims",
      body,
      now: clock,
    });
    expect(await call(dir.url, "/v1/claims", { method: "POST", ...signed })).toMatchObject({
      status: 400,
      json: { error: "invalid_body" },
    });
  });
});
