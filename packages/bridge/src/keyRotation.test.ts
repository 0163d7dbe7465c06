import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { generateSigningKeyPair } from "./crypto.js";
import { decodeKeyRotation, signKeyRotation, verifyKeyRotation, verifyRotationChain } from "./keyRotation.js";

const NOW = 1_800_000_000;
const ID = "acct:alice@a.test";
const [k1, k2, k3, evil] = await Promise.all([1, 2, 3, 4].map(() => generateSigningKeyPair()));
const r12 = await signKeyRotation({ identity: ID, oldKey: k1!, newKey: k2!.publicKey, now: NOW });
const r23 = await signKeyRotation({ identity: ID, oldKey: k2!, newKey: k3!.publicKey, now: NOW + 10 });

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

const chain = (rotations: Uint8Array[], from = k1!.publicKey, to = k3!.publicKey) =>
  verifyRotationChain({ identity: ID, from, to, rotations, now: NOW + 60 });

describe("account-key continuity", () => {
  it("round-trips and verifies under the old key (KR-1…KR-5)", async () => {
    const r = await verifyKeyRotation(decodeKeyRotation(r12), ID, NOW);
    expect(r.oldKey).toEqual(k1!.publicKey);
    expect(r.newKey).toEqual(k2!.publicKey);
    expect(r.issuedAt).toBe(NOW);
  });

  it("KR-1, KR-4: rejects every single-byte change", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: r12.byteLength - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (i, x) => {
          const bad = r12.slice();
          bad[i] = bad[i]! ^ x;
          expect(await codeOf(() => verifyKeyRotation(decodeKeyRotation(bad), ID, NOW))).toBe(
            "invalid_key_rotation",
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it("KR-1: round-trips any issue time", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: NOW }), async (t) => {
        const bytes = await signKeyRotation({ identity: ID, oldKey: k1!, newKey: k2!.publicKey, now: t });
        expect((await verifyKeyRotation(decodeKeyRotation(bytes), ID, NOW)).issuedAt).toBe(t);
      }),
      { numRuns: 20 },
    );
  });

  it("KR-2, KR-3, KR-5: refuses another acct, an unchanged key, a statement from the future", async () => {
    expect(await codeOf(() => verifyKeyRotation(decodeKeyRotation(r12), "acct:bob@a.test", NOW))).toBe(
      "invalid_key_rotation",
    );
    const same = await signKeyRotation({ identity: ID, oldKey: k1!, newKey: k1!.publicKey, now: NOW });
    expect(await codeOf(() => verifyKeyRotation(decodeKeyRotation(same), ID, NOW))).toBe(
      "invalid_key_rotation",
    );
    expect(await codeOf(() => verifyKeyRotation(decodeKeyRotation(r23), ID, NOW - 300))).toBe(
      "invalid_key_rotation",
    );
    expect(() => decodeKeyRotation(Uint8Array.from([...r12, 0]))).toThrow(ProtocolError);
  });

  it("KR-6: follows a chain in any order, ignoring junk", async () => {
    const ok = await chain([new Uint8Array(9), r23, r12]);
    expect(ok.ok && ok.chain.map((c) => c.newKey)).toEqual([k2!.publicKey, k3!.publicKey]);
    expect(await chain([r12], k1!.publicKey, k2!.publicKey)).toMatchObject({ ok: true });
  });

  it("KR-6: no chain without every link, after a fork, or backwards in time", async () => {
    expect(await chain([r23])).toMatchObject({ ok: false });
    expect(await chain([r12])).toMatchObject({ ok: false });
    // Someone else holding k2 signed a second successor: the chain is not trusted.
    const fork = await signKeyRotation({ identity: ID, oldKey: k2!, newKey: evil!.publicKey, now: NOW + 20 });
    expect(await chain([r12, r23, fork])).toMatchObject({ ok: false, reason: expect.stringMatching(/fork/) });
    const early = await signKeyRotation({ identity: ID, oldKey: k2!, newKey: k3!.publicKey, now: NOW - 10 });
    expect(await chain([r12, early])).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/back in time/),
    });
    // A statement for another account does not link this one's keys.
    const foreign = await signKeyRotation({
      identity: "acct:bob@a.test",
      oldKey: k1!,
      newKey: k2!.publicKey,
      now: NOW,
    });
    expect(await chain([foreign, r23])).toMatchObject({ ok: false });
  });
});
