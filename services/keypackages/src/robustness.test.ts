import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { isErrorCode } from "@mastodon-mls/protocol";
import { DIRECTORY_BODY_LIMIT } from "./directory.js";
import { signRequest } from "@mastodon-mls/bridge";
import { b64, createTestDevice, keyPackagesOf } from "./testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type Answer,
  type Member,
  type RunningDirectory,
} from "./testing/harness.js";

// Every endpoint, fed garbage, truncated, oversized and mistyped bodies, answers a 4xx with a catalogue
// `{error, message}` body, and the service goes on serving. A 500 here is a bug.

let mastodon: DevMastodon;
let dir: RunningDirectory;
let alice: Member;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  dir = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "a.test" });
  alice = await createMember(mastodon, dir.url, "alice", { keyPackages: 2 });
});
afterAll(async () => {
  await dir.close();
  await mastodon.close();
});

function expectRefusal(res: Answer, what: string): void {
  expect(res.status, what).toBeGreaterThanOrEqual(400);
  expect(res.status, what).toBeLessThan(500);
  expect(typeof res.json, what).toBe("object");
  expect(isErrorCode(res.json.error), `${what}: ${JSON.stringify(res.json)}`).toBe(true);
  expect(typeof res.json.message, what).toBe("string");
}

const JSON_TYPE = "application/json";
const garbage: [string, string | Uint8Array, string][] = [
  ["not JSON", "{{{", JSON_TYPE],
  ["truncated JSON", '{"certificate":"AAAA', JSON_TYPE],
  ["empty", "", JSON_TYPE],
  ["null", "null", JSON_TYPE],
  ["an array", "[1,2,3]", JSON_TYPE],
  ["a string", '"hello"', JSON_TYPE],
  [
    "wrong field types",
    '{"certificate":5,"key_packages":{"0":"AA"},"accounts":"x","ciphersuite":"1"}',
    JSON_TYPE,
  ],
  ["deep nesting", "[".repeat(100_000) + "]".repeat(100_000), JSON_TYPE],
  ["binary", new Uint8Array(512).map((_, i) => (i * 151) % 256), JSON_TYPE],
  ["invalid UTF-8", new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), JSON_TYPE],
  ["proto pollution", '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}}}', JSON_TYPE],
  ["text/plain", '{"certificate":"AAAA"}', "text/plain"],
  ["a form", "certificate=AAAA", "application/x-www-form-urlencoded"],
  ["raw MLS", new Uint8Array([0, 1, 0, 5, 1, 2, 3]), "message/mls"],
  ["multipart", "--x\r\n\r\n--x--", "multipart/form-data; boundary=x"],
];

interface Endpoint {
  name: string;
  method: "PUT" | "POST";
  path: () => string;
  auth: (body: string | Uint8Array, path: string, method: string) => Promise<Record<string, string>>;
}

const bearer = async () => ({ authorization: `Bearer ${alice.token}` });
const signed = async (body: string | Uint8Array, path: string, method: string) => ({
  authorization: await signRequest(
    { certificate: alice.device.certificate, signKey: alice.device.key.signKey },
    {
      method,
      origin: PUBLIC_URL,
      pathAndQuery: path,
      body: typeof body === "string" ? new TextEncoder().encode(body) : body,
    },
  ),
});

const endpoints: Endpoint[] = [
  { name: "register", method: "PUT", path: () => `/v1/devices/${alice.device.deviceId}`, auth: bearer },
  {
    name: "upload",
    method: "POST",
    path: () => `/v1/devices/${alice.device.deviceId}/keypackages`,
    auth: bearer,
  },
  { name: "claims", method: "POST", path: () => "/v1/claims", auth: signed },
  { name: "device list", method: "PUT", path: () => `/v1/accounts/${alice.acct}/device-list`, auth: bearer },
];

describe.each(endpoints)("$name with a bad body", (endpoint) => {
  it.each(garbage)("refuses %s", async (what, raw, type) => {
    const path = endpoint.path();
    const res = await call(dir.url, path, {
      method: endpoint.method,
      raw,
      headers: { "content-type": type, ...(await endpoint.auth(raw, path, endpoint.method)) },
    });
    expectRefusal(res, `${endpoint.name}: ${what}`);
  });

  it("refuses a body over the limit with 413", async () => {
    const raw = `{"x":"${"A".repeat(DIRECTORY_BODY_LIMIT)}"}`;
    const path = endpoint.path();
    const res = await call(dir.url, path, {
      method: endpoint.method,
      raw,
      headers: { "content-type": JSON_TYPE, ...(await endpoint.auth(raw, path, endpoint.method)) },
    });
    expectRefusal(res, `${endpoint.name}: oversized`);
    expect(res.json.error).toBe("payload_too_large");
    expect(res.status).toBe(413);
  });

  it("refuses a wrong media type with 415", async () => {
    const res = await call(dir.url, endpoint.path(), {
      method: endpoint.method,
      raw: "hello",
      headers: {
        "content-type": "text/plain",
        ...(await endpoint.auth("hello", endpoint.path(), endpoint.method)),
      },
    });
    expect(res).toMatchObject({ status: 415, json: { error: "unsupported_media_type" } });
  });

  it("refuses fields over their size limits", async () => {
    const huge = "A".repeat(20_000);
    const body = JSON.stringify({
      certificate: huge,
      key_packages: Array.from({ length: 101 }, () => "AAAA"),
      accounts: [huge],
      ciphersuite: 1,
    });
    const path = endpoint.path();
    const res = await call(dir.url, path, {
      method: endpoint.method,
      raw: body,
      headers: { "content-type": JSON_TYPE, ...(await endpoint.auth(body, path, endpoint.method)) },
    });
    expectRefusal(res, `${endpoint.name}: oversized fields`);
  });
});

describe("paths and parameters", () => {
  it.each([
    ["GET", "/v1/devices/short/keypackages/count"],
    ["GET", `/v1/devices/${"A".repeat(43)}%00/keypackages/count`],
    ["GET", "/v1/accounts/%E0%A4%A/devices"],
    ["GET", `/v1/accounts/${"a".repeat(150)}@${"b".repeat(45)}.test/devices`],
    ["GET", `/v1/accounts/${"a".repeat(400)}/devices`],
    ["GET", "/v1/accounts/a@b@c/devices"],
    ["PUT", "/v1/devices/..%2F..%2Fetc/"],
    ["DELETE", "/v1/claims"],
    ["GET", "/v1/nothing-here"],
  ])("%s %s is refused", async (method, path) => {
    const res = await call(dir.url, path, { method });
    expectRefusal(res, `${method} ${path}`);
  });
});

describe("size and batch limits", () => {
  const upload = (body: unknown) =>
    call(dir.url, `/v1/devices/${alice.device.deviceId}/keypackages`, { token: alice.token, body });

  it("takes at most 100 KeyPackages per upload", async () => {
    const over = await upload({ key_packages: Array.from({ length: 101 }, () => "AAAA") });
    expect(over).toMatchObject({ status: 400, json: { error: "invalid_body" } });
    expect(over.json.message).toMatch(/key_packages/);
    // 100 pass the schema, and the first entry is then refused for what it is.
    const atLimit = await upload({ key_packages: Array.from({ length: 100 }, () => "AAAA") });
    expect(atLimit).toMatchObject({ status: 400, json: { error: "invalid_key_package", index: 0 } });
  });

  it("takes KeyPackages of at most 8 KiB and certificates of at most 2 KiB", async () => {
    const tooLongText = "A".repeat(Math.ceil((8 * 1024 * 4) / 3) + 8);
    expect(await upload({ key_packages: [tooLongText] })).toMatchObject({
      status: 400,
      json: { error: "invalid_body" },
    });
    expect(await upload({ key_packages: [], last_resort: tooLongText })).toMatchObject({
      status: 400,
      json: { error: "invalid_body" },
    });
    const register = (certificate: string) =>
      call(dir.url, `/v1/devices/${alice.device.deviceId}`, {
        method: "PUT",
        token: alice.token,
        body: { certificate },
      });
    expect(await register("A".repeat(Math.ceil((2048 * 4) / 3) + 8))).toMatchObject({
      status: 400,
      json: { error: "invalid_body" },
    });
    // Within the schema's length but over 2048 bytes once decoded.
    expect(await register(b64(new Uint8Array(2049)))).toMatchObject({
      status: 413,
      json: { error: "payload_too_large" },
    });
  });

  it("names at most 64 accounts per claim", async () => {
    const body = JSON.stringify({
      ciphersuite: 1,
      accounts: Array.from({ length: 65 }, (_, i) => `u${i}@a.test`),
    });
    const res = await call(dir.url, "/v1/claims", {
      method: "POST",
      raw: body,
      headers: { "content-type": JSON_TYPE, ...(await signed(body, "/v1/claims", "POST")) },
    });
    expect(res).toMatchObject({ status: 400, json: { error: "invalid_body" } });
    expect(res.json.message).toMatch(/accounts/);
  });
});

describe("after all that", () => {
  it("still serves", async () => {
    expect(await call(dir.url, "/healthz")).toMatchObject({ status: 200 });
    const more = await keyPackagesOf(alice.device, 1);
    const res = await call(dir.url, `/v1/devices/${alice.device.deviceId}/keypackages`, {
      token: alice.token,
      body: { key_packages: more.map((k) => b64(k.encoded)) },
    });
    expect(res).toMatchObject({ status: 200, json: { count: 3 } });
    const other = await createTestDevice("x@b.test");
    expect(other.deviceId).toHaveLength(43);
  });
});
