import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import {
  createDeviceList,
  decodeKeyRotation,
  generateSigningKeyPair,
  parseAuthorization,
  parseDeviceCertificate,
  parseKeyPackage,
  verifyDeviceListUpdate,
} from "@mastodon-mls/bridge";
import { ProtocolError, fromBase64url, parseAcct } from "@mastodon-mls/protocol";
import { verifyUploadEntry } from "./keyPackageUpload.js";
import { b64, createTestDevice, deviceSigned, keyPackageOf, type TestDevice } from "./testing/devices.js";
import {
  PUBLIC_URL,
  call,
  createMember,
  startDirectory,
  startMastodon,
  type Member,
  type RunningDirectory,
} from "./testing/harness.js";

// Hostile input against the directory, from an audit (2026-11-27): minted certificates that must not
// spend an honest domain's claim budget, handles that must not cost a pattern's backtracking, a
// KeyPackage that must not outlive its certificate, and decoders fed truncated and mutated bytes.

let mastodon: DevMastodon;

beforeAll(async () => {
  mastodon = await startMastodon("a.test");
});
afterAll(async () => {
  await mastodon.close();
});

async function claim(
  url: string,
  requester: TestDevice,
  accounts: string[],
  opts: { now?: number; claimId?: string } = {},
) {
  const body = { ciphersuite: 1, accounts, ...(opts.claimId ? { claim_id: opts.claimId } : {}) };
  const { headers, raw } = await deviceSigned(requester, {
    origin: PUBLIC_URL,
    method: "POST",
    path: "/v1/claims",
    body,
    now: opts.now,
  });
  return call(url, "/v1/claims", { method: "POST", raw, headers });
}

/** Anything thrown must be a ProtocolError (a 4xx with a code), never a TypeError/RangeError (a 500). */
async function onlyProtocolErrors(work: () => Promise<unknown>, what: string): Promise<void> {
  try {
    await work();
  } catch (err) {
    expect(err, `${what}: ${String(err)}`).toBeInstanceOf(ProtocolError);
  }
}

describe("domain rate limit (requester certificates are self-issued)", () => {
  let dir: RunningDirectory;
  let alice: Member;
  let bob: Member;

  beforeAll(async () => {
    dir = await startDirectory(mastodon.url, {
      INSTANCE_DOMAIN: "a.test",
      RATE_LIMIT_DOMAIN_MAX: "5",
      RATE_LIMIT_DOMAIN_WINDOW_SECONDS: "3600",
      SWEEP_INTERVAL_SECONDS: "0",
    });
    alice = await createMember(mastodon, dir.url, "rl_alice", { keyPackages: 3 });
    bob = await createMember(mastodon, dir.url, "rl_bob");
  });
  afterAll(async () => {
    await dir.close();
  });

  it("an outsider's minted certificates for a.test cannot lock a.test's registered devices out of claims", async () => {
    // Mallory mints a device certificate claiming to be someone at a.test with an account key of her own.
    // It is registered nowhere; she never had a token of a.test. Her claims name a foreign account, so
    // they take nothing from anyone.
    const mallory = await createTestDevice("nobody@a.test");
    for (let i = 0; i < 6; i++) await claim(dir.url, mallory, ["x@b.test"]);
    // Bob, a registered device of a real a.test account, now wants to add Alice.
    const res = await claim(dir.url, bob.device, [alice.acct]);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json.accounts[0].key_packages).toHaveLength(1);
  });
});

/**
 * Every string in `watched` that a regular expression was run over during `work`. The directory runs in
 * this process, so its patterns are seen too; RegExp#test and String#match call RegExp#exec. Instead of
 * timing (no timed tests here): a handle too long to be one must be refused before any pattern sees it.
 */
async function patternsRunOver(watched: readonly string[], work: () => unknown): Promise<string[]> {
  const seen: string[] = [];
  const exec = RegExp.prototype.exec;
  RegExp.prototype.exec = function (this: RegExp, text: string) {
    if (watched.includes(text)) seen.push(text);
    return exec.call(this, text);
  };
  try {
    await work();
  } finally {
    RegExp.prototype.exec = exec;
  }
  return seen;
}

describe("acct parsing cost (public, unauthenticated routes)", () => {
  let dir: RunningDirectory;
  beforeAll(async () => {
    dir = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "a.test", SWEEP_INTERVAL_SECONDS: "0" });
  });
  afterAll(async () => {
    await dir.close();
  });

  // 312 letters and a trailing dot: the old USER = /^[a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?$/ backtracked
  // cubically over it (~30 ms a parse) before the 64-character user limit was even looked at.
  const user = `${"a".repeat(312)}.`;
  const hostile = `${user}@a.test`;
  const benign = `.${"a".repeat(312)}@a.test`; // same length, refused at the first character

  it("parseAcct refuses an over-long user in bounded time", async () => {
    expect(hostile).toHaveLength(320);
    const over = await patternsRunOver([user, hostile], () => {
      for (let i = 0; i < 10; i++) expect(() => parseAcct(hostile)).toThrow(ProtocolError);
    });
    expect(over).toEqual([]);
  });

  it("GET /v1/accounts/:acct/devices does not spend tens of ms of CPU per anonymous request", async () => {
    const over = await patternsRunOver([user, hostile], async () => {
      for (const acct of [hostile, benign]) {
        const res = await call(dir.url, `/v1/accounts/${acct}/devices`);
        expect(res).toMatchObject({ status: 400, json: { error: "invalid_acct" } });
      }
    });
    expect(over).toEqual([]);
  });
});

describe("acct parsing cost before any signature is checked (MLS-Device certificate identity)", () => {
  let dir: RunningDirectory;
  beforeAll(async () => {
    dir = await startDirectory(mastodon.url, { INSTANCE_DOMAIN: "a.test", SWEEP_INTERVAL_SECONDS: "0" });
  });
  afterAll(async () => {
    await dir.close();
  });

  it("POST /v1/claims with a certificate naming a pathological identity is refused cheaply", async () => {
    // CERT-2 (parseCanonicalIdentity) runs before the account key's signature and the request's are
    // checked, so nobody needs a key of anyone to make the directory run it.
    const user = `${"a".repeat(307)}.`;
    const identity = `acct:${user}@a.test`;
    const hostile = await createTestDevice("x@a.test", { identity });
    const benign = await createTestDevice("x@a.test", { identity: `acct:.${"a".repeat(307)}@a.test` });
    const over = await patternsRunOver([user, identity, identity.slice(5)], async () => {
      for (const device of [hostile, benign]) {
        const res = await claim(dir.url, device, ["x@a.test"]);
        expect(res).toMatchObject({ status: 401, json: { error: "auth_invalid" } });
      }
    });
    expect(over).toEqual([]);
  });
});

describe("KeyPackages that outlive the certificate they carry", () => {
  let dir: RunningDirectory;
  let t = Math.floor(Date.now() / 1000);
  beforeAll(async () => {
    dir = await startDirectory(
      mastodon.url,
      { INSTANCE_DOMAIN: "a.test", RATE_LIMITS: "off", SWEEP_INTERVAL_SECONDS: "0" },
      { now: () => t },
    );
  });
  afterAll(async () => {
    await dir.close();
  });

  it("a claim never hands out a KeyPackage whose certificate has expired", async () => {
    const t0 = t;
    mastodon.createAccount({ username: "cert_short" });
    const token = mastodon.issueToken({ username: "cert_short", scopes: "read write" });
    // A certificate with one day left (a client in the last days of its one-year certificate).
    const device = await createTestDevice("cert_short@a.test", { notAfter: t0 + 86400 });
    expect(
      await call(dir.url, `/v1/devices/${device.deviceId}`, {
        method: "PUT",
        token,
        body: { certificate: b64(device.certificate) },
      }),
    ).toMatchObject({ status: 201 });
    // The client library's default: 90 days of KeyPackage lifetime, whatever the certificate says.
    const kp = await keyPackageOf(device);
    const up = await call(dir.url, `/v1/devices/${device.deviceId}/keypackages`, {
      token,
      body: { key_packages: [b64(kp.encoded)] },
    });
    expect(up).toMatchObject({ status: 200 });

    t = t0 + 2 * 86400; // the certificate has expired; the KeyPackage's lifetime has not
    const claimer = await createTestDevice("carol@b.test", {
      notBefore: t0 - 60,
      notAfter: t0 + 300 * 86400,
    });
    const res = await claim(dir.url, claimer, ["cert_short@a.test"], { now: t });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    // Whatever is handed out must pass the checks the claiming client runs before adding it (KP-7).
    for (const handed of res.json.accounts[0].key_packages as { key_package: string }[]) {
      await expect(parseKeyPackage(fromBase64url(handed.key_package), t)).resolves.toBeDefined();
    }
  });
});

describe("decoders fed mutated real objects throw only ProtocolErrors", () => {
  it("KeyPackage upload entries: every truncation and byte mutation", async () => {
    const device = await createTestDevice("fuzz@a.test");
    const kp = (await keyPackageOf(device)).encoded;
    const owner = { acct: "fuzz@a.test", sigKey: device.key.publicKey };
    const now = Math.floor(Date.now() / 1000);
    const variants: Uint8Array[] = [];
    for (let i = 0; i < kp.length; i += 3) variants.push(kp.slice(0, i));
    for (let i = 0; i < kp.length; i++) {
      for (const v of [0x00, 0xff, 0x40, 0x80]) {
        const m = kp.slice();
        m[i] = v;
        variants.push(m);
      }
    }
    for (const [i, bytes] of variants.entries()) {
      await onlyProtocolErrors(() => verifyUploadEntry(b64(bytes), owner, false, now), `variant ${i}`);
    }
  });

  it("certificates, device lists, continuity statements and Authorization headers", async () => {
    const device = await createTestDevice("fuzz2@a.test");
    const accountKey = await generateSigningKeyPair();
    const list = await createDeviceList({
      identity: "acct:fuzz2@a.test",
      accountKey,
      devices: [{ sigKey: device.key.publicKey, name: "phone" }],
    });
    const mutate = (src: Uint8Array): Uint8Array[] => {
      const out: Uint8Array[] = [];
      for (let i = 0; i < src.length; i++) {
        out.push(src.slice(0, i));
        for (const v of [0x00, 0xff, 0x7f, 0xbf]) {
          const m = src.slice();
          m[i] = v;
          out.push(m);
        }
      }
      return out;
    };
    for (const bytes of mutate(device.certificate)) {
      await onlyProtocolErrors(() => parseDeviceCertificate(bytes), "certificate");
      await onlyProtocolErrors(async () => decodeKeyRotation(bytes), "rotation");
      await onlyProtocolErrors(
        async () => parseAuthorization(`MLS-Device ${b64(bytes)}.1.${"A".repeat(22)}.${"A".repeat(86)}`),
        "authorization",
      );
    }
    for (const bytes of mutate(list)) {
      await onlyProtocolErrors(
        () => verifyDeviceListUpdate({ acct: "fuzz2@a.test", stored: undefined, next: bytes }),
        "device list",
      );
    }
  });
});

describe("odd requests at the HTTP layer answer 4xx, never 5xx", () => {
  let dir: RunningDirectory;
  let member: Member;
  beforeAll(async () => {
    dir = await startDirectory(mastodon.url, {
      INSTANCE_DOMAIN: "a.test",
      RATE_LIMITS: "off",
      SWEEP_INTERVAL_SECONDS: "0",
    });
    member = await createMember(mastodon, dir.url, "odd_member", { keyPackages: 1 });
  });
  afterAll(async () => {
    await dir.close();
  });

  it("tokens, headers, parameters and bodies", async () => {
    const id = member.device.deviceId;
    const upload = `/v1/devices/${id}/keypackages`;
    const cases: [string, string, Parameters<typeof call>[2]][] = [
      ["token of 1024 chars", upload, { token: "a".repeat(1024), body: { key_packages: [] } }],
      ["token with padding only", upload, { token: "=", body: { key_packages: [] } }],
      ["token of 1025 chars", upload, { token: "a".repeat(1025), body: { key_packages: [] } }],
      [
        "MLS-Device on a bearer route",
        upload,
        { headers: { authorization: "MLS-Device a.b.c.d" }, body: {} },
      ],
      [
        "Bearer on a signed route",
        "/v1/claims",
        { token: member.token, body: { ciphersuite: 1, accounts: ["a@a.test"] } },
      ],
      [
        "charset latin1",
        upload,
        {
          token: member.token,
          raw: '{"key_packages":[]}',
          headers: { "content-type": "application/json; charset=latin1" },
        },
      ],
      [
        "json with BOM",
        upload,
        {
          token: member.token,
          raw: '\ufeff{"key_packages":[]}',
          headers: { "content-type": "application/json" },
        },
      ],
      ["unicode acct", "/v1/accounts/%C3%BC%C3%BC@%C3%BC%C3%BC.test/devices", { method: "GET" }],
      ["IDN acct of this instance", "/v1/accounts/x@A.TEST/devices", { method: "GET" }],
      ["acct with NUL", "/v1/accounts/x%00@a.test/devices", { method: "GET" }],
      ["acct with RTL override", "/v1/accounts/%E2%80%AEx@a.test/keypackages", { method: "GET" }],
      [
        "huge Accept",
        `/v1/accounts/${member.acct}/keypackages`,
        { method: "GET", headers: { accept: "text/x;q=0.1,".repeat(1000) } },
      ],
      ["query string", `/v1/accounts/${member.acct}/devices?x=${"y".repeat(2000)}`, { method: "GET" }],
      ["HEAD count unsigned", `/v1/devices/${id}/keypackages/count`, { method: "HEAD" }],
      [
        "device-list for someone else",
        "/v1/accounts/someone@a.test/device-list",
        { method: "PUT", token: member.token, body: { device_list: "AAAA" } },
      ],
      [
        "device-list not base64",
        `/v1/accounts/${member.acct}/device-list`,
        { method: "PUT", token: member.token, body: { device_list: "A" } },
      ],
      [
        "device-list empty",
        `/v1/accounts/${member.acct}/device-list`,
        { method: "PUT", token: member.token, body: { device_list: "" } },
      ],
      [
        "upload with last_resort empty",
        upload,
        { token: member.token, body: { key_packages: [], last_resort: "" } },
      ],
      [
        "upload of another account's device",
        `/v1/devices/${"B".repeat(43)}/keypackages`,
        { token: member.token, body: { key_packages: [] } },
      ],
    ];
    for (const [what, path, opts] of cases) {
      const res = await call(dir.url, path, opts);
      expect(res.status, `${what}: ${res.status} ${JSON.stringify(res.json)}`).toBeLessThan(500);
    }
  });

  it("claims with odd accounts, duplicates and claim_id reuse", async () => {
    const requester = await createTestDevice("odd@b.test");
    const odd = [
      `@${member.acct}`,
      `acct:${member.acct}`,
      member.acct.toUpperCase(),
      ` ${member.acct} `,
      "x@xn--nxasmq6b.test",
      "x@bücher.example",
      "x@a.test.",
      "x@localhost",
    ];
    const res = await claim(dir.url, requester, odd, { claimId: "c".repeat(20) });
    expect(res.status, JSON.stringify(res.json)).toBeLessThan(500);
    const again = await claim(dir.url, requester, [member.acct], { claimId: "c".repeat(20) });
    expect(again.status).toBe(200);
    if (res.status === 200) {
      expect(again.json.accounts[0].key_packages[0]?.key_package).toBe(
        (res.json.accounts as { acct: string; key_packages: { key_package: string }[] }[]).find(
          (a) => a.acct === member.acct,
        )?.key_packages[0]?.key_package,
      );
    }
  });
});
