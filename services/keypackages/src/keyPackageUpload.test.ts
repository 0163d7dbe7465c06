import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { ProtocolError, toBase64url } from "@mastodon-mls/protocol";
import { verifyUploadEntry } from "./keyPackageUpload.js";
import { keyPackageOf } from "./testing/devices.js";
import {
  createMember,
  startDirectory,
  startMastodon,
  type Member,
  type RunningDirectory,
} from "./testing/harness.js";

// Untrusted bytes in an upload: whatever they are, the answer is a 4xx and nothing new is stored.

let mastodon: DevMastodon;
let dir: RunningDirectory;
let alice: Member;
let valid: Uint8Array;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  // Hundreds of uploads by one account: the limits are tested elsewhere (rateLimits.test.ts).
  dir = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "a.test", RATE_LIMITS: "off" });
  alice = await createMember(mastodon, dir.url, "alice");
  valid = (await keyPackageOf(alice.device)).encoded;
  // The genuine one is stored first, so a mutation that decodes to the same KeyPackage is visible as a
  // second copy (it must not be one).
  const res = await upload([toBase64url(valid)]);
  expect(res.json).toEqual({ stored: 1, count: 1, last_resort: false });
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

async function upload(keyPackages: string[]): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await dir.directory.app.inject({
    method: "POST",
    url: `/v1/devices/${alice.device.deviceId}/keypackages`,
    headers: { authorization: `Bearer ${alice.token}`, "content-type": "application/json" },
    payload: JSON.stringify({ key_packages: keyPackages }),
  });
  return { status: res.statusCode, json: res.json() };
}

type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "overwrite"; at: number; bytes: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({
    kind: fc.constant("overwrite" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }),
  }),
);

function apply(bytes: Uint8Array, m: Mutation): Uint8Array {
  const at = m.at % (bytes.length + 1);
  switch (m.kind) {
    case "flip": {
      const out = bytes.slice();
      if (at < out.length) out[at]! ^= 1 << m.bit;
      return out;
    }
    case "truncate":
      return bytes.subarray(0, at);
    case "insert":
      return Uint8Array.from([...bytes.subarray(0, at), ...m.bytes, ...bytes.subarray(at)]);
    case "overwrite": {
      const out = bytes.slice();
      out.set(m.bytes.subarray(0, Math.max(0, out.length - at)), Math.min(at, out.length));
      return out;
    }
  }
}

const equal = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** Refusals by the KeyPackage checks themselves, not by authentication or the body schema. */
const KEY_PACKAGE_ERRORS = new Set([
  "invalid_key_package",
  "trailing_bytes",
  "invalid_signature",
  "invalid_certificate",
  "unsupported_ciphersuite",
  "lifetime_invalid",
  "acct_mismatch",
  "device_mismatch",
]);

describe("the upload decoder", () => {
  it("refuses random mutations of a valid KeyPackage with a 4xx and stores nothing", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (mutations) => {
        const bytes = mutations.reduce(apply, valid);
        fc.pre(!equal(bytes, valid));
        const res = await upload([toBase64url(bytes)]);
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(KEY_PACKAGE_ERRORS).toContain(res.json.error);
      }),
      { numRuns: 150 },
    );
    const count = await dir.directory.context.store.countKeyPackages(
      alice.acct,
      alice.device.deviceId,
      Math.floor(Date.now() / 1000),
    );
    expect(count).toEqual({ count: 1, lastResort: false });
  });

  it("refuses random bytes, with or without a KeyPackage MLSMessage header", async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.uint8Array({ maxLength: 600 }), async (withHeader, tail) => {
        const bytes = withHeader ? Uint8Array.from([0, 1, 0, 5, 0, 1, ...tail]) : tail;
        const res = await upload([toBase64url(bytes)]);
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(KEY_PACKAGE_ERRORS).toContain(res.json.error);
      }),
      { numRuns: 100 },
    );
    const count = await dir.directory.context.store.countKeyPackages(
      alice.acct,
      alice.device.deviceId,
      Math.floor(Date.now() / 1000),
    );
    expect(count.count).toBe(1);
  });

  it("fails only with catalogue errors below 500 on any text", async () => {
    const owner = { acct: alice.acct, sigKey: alice.device.key.publicKey };
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), async (text) => {
        try {
          await verifyUploadEntry(text, owner, false, Math.floor(Date.now() / 1000));
          return false;
        } catch (err) {
          return err instanceof ProtocolError && err.status < 500;
        }
      }),
      { numRuns: 200 },
    );
  });
});
