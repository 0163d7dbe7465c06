import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { generateSigningKeyPair } from "./crypto.js";
import {
  decodeDeviceCertificate,
  signDeviceCertificate,
  verifyDeviceCertificate,
} from "./deviceCertificate.js";
import { MemoryNonceStore } from "./nonceStore.js";
import { parseAuthorization, signRequest, verifyRequest, type RequestTarget } from "./requestAuth.js";

const NOW = 1_800_000_000;

async function device(identity = "acct:alice@a.test") {
  const account = await generateSigningKeyPair();
  const dev = await generateSigningKeyPair();
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: dev.publicKey,
      notBefore: NOW - 60,
      notAfter: NOW + 86400,
    },
    account.signKey,
  );
  return { account, dev, certificate, signer: { certificate, signKey: dev.signKey } };
}

const target: RequestTarget = {
  method: "POST",
  origin: "https://hub.a.test",
  pathAndQuery: "/v1/groups/abc/messages",
  body: new TextEncoder().encode('{"message":"AAAA"}'),
};

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

describe("device certificate", () => {
  it("round-trips and verifies", async () => {
    const { certificate, dev } = await device();
    const cert = await verifyDeviceCertificate(decodeDeviceCertificate(certificate), NOW);
    expect(cert.acct).toBe("alice@a.test");
    expect(cert.sigKey).toEqual(dev.publicKey);
  });

  it("refuses an expired certificate and a non-canonical acct", async () => {
    const { certificate } = await device();
    await expect(
      codeOf(verifyDeviceCertificate(decodeDeviceCertificate(certificate), NOW + 2 * 86400)),
    ).resolves.toBe("invalid_certificate");
    const upper = await device("acct:Alice@a.test");
    await expect(
      codeOf(verifyDeviceCertificate(decodeDeviceCertificate(upper.certificate), NOW)),
    ).resolves.toBe("invalid_certificate");
  });

  it("rejects every single-byte change", async () => {
    const { certificate } = await device();
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: certificate.byteLength - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (i, x) => {
          const bad = certificate.slice();
          bad[i] = bad[i]! ^ x;
          const code = await codeOf(
            Promise.resolve().then(() => verifyDeviceCertificate(decodeDeviceCertificate(bad), NOW)),
          );
          expect(code).toBe("invalid_certificate");
        },
      ),
      { numRuns: 150 },
    );
  });

  it("refuses truncated and extended encodings", async () => {
    const { certificate } = await device();
    for (const bad of [
      certificate.subarray(0, certificate.byteLength - 1),
      Uint8Array.from([...certificate, 0]),
    ]) {
      expect(() => decodeDeviceCertificate(bad)).toThrow(ProtocolError);
    }
  });
});

describe("request signatures", () => {
  it("accepts a fresh request once and refuses its replay", async () => {
    const { signer } = await device();
    const nonces = new MemoryNonceStore();
    const header = await signRequest(signer, target, NOW);
    const cert = await verifyRequest(header, target, { nonces, now: NOW + 10 });
    expect(cert.acct).toBe("alice@a.test");
    await expect(codeOf(verifyRequest(header, target, { nonces, now: NOW + 11 }))).resolves.toBe(
      "auth_replayed",
    );
  });

  it("hands the nonce store the verified certificate, and only once the signature checked out", async () => {
    // Services count rate limits in the nonce store's step: a forged request must never get there.
    const { signer, dev } = await device();
    const spent: { key: string; acct: string; sigKey: Uint8Array }[] = [];
    const nonces = {
      claim: (key: string, _ttl: number, cert: { acct: string; sigKey: Uint8Array }) => {
        spent.push({ key, acct: cert.acct, sigKey: cert.sigKey });
        return Promise.resolve(true);
      },
    };
    const header = await signRequest(signer, target, NOW);
    const cert = await verifyRequest(header, target, { nonces, now: NOW });
    expect(spent).toHaveLength(1);
    expect(spent[0]!.key.startsWith(`${cert.deviceIdText}:`)).toBe(true);
    expect(spent[0]!.acct).toBe("alice@a.test");
    expect(spent[0]!.sigKey).toEqual(dev.publicKey);
    const forged = { ...target, body: new TextEncoder().encode('{"message":"AAAB"}') };
    await expect(codeOf(verifyRequest(header, forged, { nonces, now: NOW }))).resolves.toBe("auth_invalid");
    expect(spent).toHaveLength(1);
  });

  it("refuses skew, another origin, another path, another body, another method", async () => {
    const { signer } = await device();
    const header = await signRequest(signer, target, NOW);
    const nonces = () => ({ nonces: new MemoryNonceStore(), now: NOW });
    await expect(codeOf(verifyRequest(header, target, { ...nonces(), now: NOW + 301 }))).resolves.toBe(
      "auth_expired",
    );
    for (const t of [
      { ...target, origin: "https://hub.b.test" },
      { ...target, pathAndQuery: "/v1/groups/abd/messages" },
      { ...target, body: new TextEncoder().encode('{"message":"AAAB"}') },
      { ...target, method: "PUT" },
    ]) {
      await expect(codeOf(verifyRequest(header, t, nonces()))).resolves.toBe("auth_invalid");
    }
  });

  it("rejects every single-character change of the header", async () => {
    const { signer } = await device();
    const header = await signRequest(signer, target, NOW);
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: header.length - 1 }),
        fc.constantFrom(..."AZaz09-_.x "),
        async (i, ch) => {
          fc.pre(header[i] !== ch);
          const bad = header.slice(0, i) + ch + header.slice(i + 1);
          const code = await codeOf(verifyRequest(bad, target, { nonces: new MemoryNonceStore(), now: NOW }));
          expect(code).not.toBe("ok");
        },
      ),
      { numRuns: 200 },
    );
  });

  it("parses only well-formed headers", () => {
    for (const h of ["", "Bearer x", "MLS-Device a.b.c", "MLS-Device a.1.b.c.d", "MLS-Device !.1.AA.AA"]) {
      expect(() => parseAuthorization(h)).toThrow(ProtocolError);
    }
  });
});
