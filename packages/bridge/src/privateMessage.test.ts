import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { createApplicationMessage, createGroup, decodeMlsMessage, encodeMlsMessage } from "ts-mls";
import { cipherSuite, generateSigningKeyPair } from "./crypto.js";
import { signDeviceCertificate } from "./deviceCertificate.js";
import { generateDeviceKeyPackage } from "./keyPackage.js";
import { profileClientConfig } from "./mlsProfile.js";
import { looksPrivate, readPrivateMessage } from "./privateMessage.js";
import { decodeMlsMessageStrict } from "./screening.js";

// readPrivateMessage stands in for ts-mls's decoder on the hub's hot path, so it must refuse what ts-mls
// refuses and give what ts-mls gives, for every input: each property compares the two.

type Outcome =
  { ok: true; value: unknown; consumed: number } | { ok: false; reason: "malformed" | "not_mls" };

/** ts-mls's own reading of `bytes`, in readPrivateMessage's terms. */
function tsMls(bytes: Uint8Array): Outcome {
  let decoded: ReturnType<typeof decodeMlsMessage>;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    return { ok: false, reason: "malformed" };
  }
  if (!decoded) return { ok: false, reason: "not_mls" };
  return { ok: true, value: decoded[0], consumed: decoded[1] };
}

function ours(bytes: Uint8Array): Outcome {
  const read = readPrivateMessage(bytes);
  return read.ok ? { ok: true, value: read.msg, consumed: read.consumed } : read;
}

/** A variable-length size as RFC 9420 §2.1.2 writes it, in 1, 2 or 4 bytes (minimal or not). */
function varint(n: number, size: 1 | 2 | 4): number[] {
  if (size === 1) return [n];
  if (size === 2) return [0x40 | (n >> 8), n & 0xff];
  return [0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
}

const vfield = fc
  .tuple(fc.uint8Array({ maxLength: 80 }), fc.constantFrom(1 as const, 2 as const, 4 as const))
  .filter(([b, size]) => size !== 1 || b.length < 64)
  .map(([b, size]) => [...varint(b.length, size), ...b]);

/** An mls10 PrivateMessage built field by field, with any content type byte and optional extra bytes. */
const built = fc
  .tuple(
    vfield,
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    fc.oneof(fc.constantFrom(1, 2, 3), fc.integer({ min: 0, max: 255 })),
    vfield,
    vfield,
    vfield,
    fc.uint8Array({ maxLength: 3 }),
  )
  .map(([groupId, epoch, contentType, aad, sender, ciphertext, extra]) => {
    const e = new Uint8Array(8);
    new DataView(e.buffer).setBigUint64(0, epoch);
    return Uint8Array.from([
      0,
      1,
      0,
      2,
      ...groupId,
      ...e,
      contentType,
      ...aad,
      ...sender,
      ...ciphertext,
      ...extra,
    ]);
  });

let real: Uint8Array;

beforeAll(async () => {
  const cs = await cipherSuite();
  const sig = await generateSigningKeyPair();
  const account = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const identity = "acct:alice@a.test";
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: sig.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    account.signKey,
  );
  const kp = await generateDeviceKeyPackage({ identity, signatureKeyPair: sig, certificate });
  const state = await createGroup(
    new TextEncoder().encode("private-message-group"),
    kp.publicPackage,
    kp.privatePackage,
    [],
    cs,
    profileClientConfig(),
  );
  const app = await createApplicationMessage(state, new TextEncoder().encode("hello"), cs);
  real = encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_private_message",
    privateMessage: app.privateMessage,
  });
});

describe("readPrivateMessage against ts-mls", () => {
  it("reads a real application message as ts-mls does", () => {
    expect(looksPrivate(real)).toBe(true);
    const theirs = tsMls(real);
    expect(theirs.ok).toBe(true);
    expect(ours(real)).toEqual(theirs);
    expect(decodeMlsMessageStrict(real)).toEqual((theirs as { value: unknown }).value);
  });

  it("agrees on messages built field by field (sizes minimal or not, any content type, extra bytes)", () => {
    fc.assert(
      fc.property(built, (bytes) => {
        expect(ours(bytes)).toEqual(tsMls(bytes));
      }),
      { numRuns: 2000 },
    );
  });

  it("agrees on every prefix of a real message (truncation at each byte)", () => {
    for (let n = 4; n <= real.length; n++) {
      const bytes = real.subarray(0, n);
      expect(ours(bytes), `cut at ${n}`).toEqual(tsMls(bytes));
    }
  });

  it("agrees on a real message with bytes flipped, set, cut or inserted", () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
      fc.record({
        kind: fc.constant("set" as const),
        at: fc.nat(),
        value: fc.constantFrom(0, 1, 2, 3, 4, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xff),
      }),
      fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
      fc.record({
        kind: fc.constant("insert" as const),
        at: fc.nat(),
        value: fc.integer({ min: 0, max: 255 }),
      }),
    );
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
        let b = Uint8Array.from(real);
        for (const m of mutations) {
          // The first four bytes stay: they choose this reader; others go to ts-mls itself.
          const at = 4 + (m.at % Math.max(1, b.byteLength - 4));
          if (m.kind === "flip" && at < b.length) b[at] = b[at]! ^ m.xor;
          else if (m.kind === "set" && at < b.length) b[at] = m.value;
          else if (m.kind === "cut") b = b.slice(0, at);
          else if (m.kind === "insert")
            b = Uint8Array.from([...b.subarray(0, at), m.value, ...b.subarray(at)]);
        }
        expect(ours(b)).toEqual(tsMls(b));
      }),
      { numRuns: 3000 },
    );
  });

  it("reads bytes that start inside a larger buffer (as Buffers from base64 do) as views of them", () => {
    const padded = new Uint8Array(real.length + 13);
    padded.set(real, 7);
    const bytes = padded.subarray(7, 7 + real.length);
    expect(ours(bytes)).toEqual(tsMls(bytes));
    const fromText = Buffer.from(Buffer.from(real).toString("base64url"), "base64url");
    expect(ours(fromText)).toEqual(tsMls(fromText));
    const read = readPrivateMessage(bytes);
    if (!read.ok) throw new Error("not read");
    const pm = read.msg.privateMessage;
    for (const field of [pm.groupId, pm.authenticatedData, pm.encryptedSenderData, pm.ciphertext]) {
      expect(field.buffer).toBe(padded.buffer);
    }
    expect(pm.groupId.byteOffset).toBe(7 + 5);
    expect(pm.ciphertext.byteOffset + pm.ciphertext.length).toBe(7 + real.length);
  });

  it("is chosen only by an mls10 PrivateMessage header", () => {
    expect(looksPrivate(Uint8Array.from([0, 1, 0, 2]))).toBe(true);
    for (const head of [
      [0, 1, 0, 1],
      [0, 2, 0, 2],
      [1, 1, 0, 2],
      [0, 1, 1, 2],
      [0, 1, 0],
    ]) {
      expect(looksPrivate(Uint8Array.from(head)), head.join(",")).toBe(false);
    }
  });

  it("leaves the strict decoder's refusals as they were: garbage, truncated, trailing, oversized", () => {
    const codeOf = (bytes: Uint8Array, max?: number) => {
      try {
        decodeMlsMessageStrict(bytes, max);
        return "ok";
      } catch (e) {
        if (e instanceof ProtocolError) return `${e.code}: ${e.message}`;
        throw e;
      }
    };
    expect(codeOf(Uint8Array.from([0, 1, 0, 2]))).toBe(
      "invalid_mls_message: The MLSMessage is truncated or malformed.",
    );
    // The group id is read, then too few bytes for the epoch: ts-mls says "not an MLSMessage".
    expect(codeOf(Uint8Array.from([0, 1, 0, 2, 0, 0, 0]))).toBe(
      "invalid_mls_message: The bytes are not an MLSMessage.",
    );
    expect(codeOf(real.subarray(0, real.length - 1))).toMatch(/^invalid_mls_message/);
    expect(codeOf(Uint8Array.from([...real, 0]))).toMatch(/^trailing_bytes/);
    expect(codeOf(real, real.length - 1)).toMatch(/^payload_too_large/);
  });
});
