import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { signWithLabel, verifyWithLabel } from "ts-mls/crypto/signature.js";
import {
  cipherSuite,
  generateSigningKeyPair,
  signLabeled,
  tsMlsCipherSuite,
  verifyLabeled,
} from "./crypto.js";
import { signDeviceCertificate } from "./deviceCertificate.js";
import { MemoryNonceStore } from "./nonceStore.js";
import { signRequest, verifyRequest } from "./requestAuth.js";

// Our Ed25519 fast path must be byte-for-byte the MLS SignWithLabel of ts-mls, in both directions.

describe("SignWithLabel through node:crypto", () => {
  it("verifies what ts-mls signs and ts-mls verifies what we sign", async () => {
    const s = (await tsMlsCipherSuite()).signature;
    const mine = (await cipherSuite()).signature;
    const keys = await generateSigningKeyPair();
    await fc.assert(
      fc.asyncProperty(
        fc.string({ maxLength: 40 }),
        fc.uint8Array({ maxLength: 300 }),
        async (label, content) => {
          const theirs = await signWithLabel(keys.signKey, label, content, s);
          expect(await verifyLabeled(keys.publicKey, label, content, theirs)).toBe(true);
          const ours = await signLabeled(keys.signKey, label, content);
          expect(await verifyWithLabel(keys.publicKey, label, content, ours, s)).toBe(true);
          expect(ours).toEqual(theirs); // Ed25519 is deterministic
          // The suite handed to ts-mls (cipherSuite) signs and verifies through the same path.
          expect(await signWithLabel(keys.signKey, label, content, mine)).toEqual(theirs);
          expect(await verifyWithLabel(keys.publicKey, label, content, theirs, mine)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("refuses another label, another key, a changed signature and malformed keys without throwing", async () => {
    const keys = await generateSigningKeyPair();
    const other = await generateSigningKeyPair();
    const content = new TextEncoder().encode("content");
    const sig = await signLabeled(keys.signKey, "a", content);
    expect(await verifyLabeled(keys.publicKey, "b", content, sig)).toBe(false);
    expect(await verifyLabeled(other.publicKey, "a", content, sig)).toBe(false);
    const flipped = sig.slice();
    flipped[10] = flipped[10]! ^ 1;
    expect(await verifyLabeled(keys.publicKey, "a", content, flipped)).toBe(false);
    expect(await verifyLabeled(new Uint8Array(32).fill(0xff), "a", content, sig)).toBe(false);
    expect(await verifyLabeled(new Uint8Array(31), "a", content, sig)).toBe(false);
    await expect(signLabeled(new Uint8Array(5), "a", content)).rejects.toThrow();
    const mine = (await cipherSuite()).signature;
    expect(await mine.verify(new Uint8Array(31), content, sig)).toBe(false);
    expect(await mine.verify(keys.publicKey, content, sig.subarray(1))).toBe(false);
    await expect(mine.sign(new Uint8Array(5), content)).rejects.toThrow();
  });
});

describe("the verified-certificate cache", () => {
  it("still refuses a cached certificate once it has expired", async () => {
    const now = 1_900_000_000;
    const account = await generateSigningKeyPair();
    const dev = await generateSigningKeyPair();
    const certificate = await signDeviceCertificate(
      {
        identity: "acct:cache@a.test",
        accountKey: account.publicKey,
        sigKey: dev.publicKey,
        notBefore: now - 10,
        notAfter: now + 100,
      },
      account.signKey,
    );
    const target = { method: "GET", origin: "https://x.test", pathAndQuery: "/v1/inbox" };
    const signer = { certificate, signKey: dev.signKey };
    const nonces = new MemoryNonceStore();
    await expect(
      verifyRequest(await signRequest(signer, target, now), target, { nonces, now }),
    ).resolves.toMatchObject({
      acct: "cache@a.test",
    });
    const late = now + 200;
    await expect(
      verifyRequest(await signRequest(signer, target, late), target, { nonces, now: late }),
    ).rejects.toThrow(/expired/);
  });

  it("is keyed by the certificate's exact text: another spelling of the same bytes is still refused", async () => {
    const now = 1_900_000_000;
    const account = await generateSigningKeyPair();
    const dev = await generateSigningKeyPair();
    const certificate = await signDeviceCertificate(
      {
        identity: "acct:spelling@a.test",
        accountKey: account.publicKey,
        sigKey: dev.publicKey,
        notBefore: now - 10,
        notAfter: now + 100,
      },
      account.signKey,
    );
    const target = { method: "GET", origin: "https://x.test", pathAndQuery: "/v1/inbox" };
    const signer = { certificate, signKey: dev.signKey };
    const nonces = new MemoryNonceStore();
    await verifyRequest(await signRequest(signer, target, now), target, { nonces, now });
    // The same certificate bytes with stray bits in the last character: a lenient decoder reads the
    // same bytes, the strict one refuses it, cached twin or not.
    const header = await signRequest(signer, target, now);
    const [scheme, rest] = header.split(" ") as [string, string];
    const [cert, ...others] = rest.split(".");
    const last = cert!.at(-1)!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // Its length leaves unused low bits in the last character (the identity's length fixes it); flipping
    // the lowest one changes the text, not the bytes.
    expect(cert!.length % 4).not.toBe(0);
    const stray = alphabet[alphabet.indexOf(last) ^ 1]!;
    expect(Buffer.from(cert!.slice(0, -1) + stray, "base64url")).toEqual(Buffer.from(cert!, "base64url"));
    const respelled = `${scheme} ${[cert!.slice(0, -1) + stray, ...others].join(".")}`;
    await expect(verifyRequest(respelled, target, { nonces, now })).rejects.toMatchObject({
      code: "auth_invalid",
    });
  });
});
