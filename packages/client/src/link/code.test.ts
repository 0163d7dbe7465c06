import { generateSigningKeyPair } from "@mastodon-mls/bridge";
import fc from "fast-check";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ClientError } from "../errors.js";
import {
  LINK_CODE_MAX_AGE_SECONDS,
  LINK_CODE_PREFIX,
  confirmationCode,
  decodeLinkCode,
  encodeLinkCode,
  sameConfirmation,
  verifyLinkRequest,
  type LinkRequestTbs,
} from "./code.js";

// The link code (docs/protocol.md "Linking a device", LNK-1…LNK-5).

const NOW = 1_800_000_000;
const acct = fc
  .tuple(fc.stringMatching(/^[a-z0-9_]{1,30}$/), fc.stringMatching(/^[a-z0-9]{1,20}\.[a-z]{2,6}$/))
  .map(([u, d]) => `${u}@${d}`);
const request = fc.record({
  acct,
  sigKey: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  name: fc.stringMatching(/^[A-Za-z0-9 ._-]{1,40}$/),
  createdAt: fc.integer({ min: NOW - LINK_CODE_MAX_AGE_SECONDS, max: NOW }),
});

const refused = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ClientError);
    expect((e as ClientError).code).toBe("bad_link_code");
    return (e as ClientError).message;
  }
  throw new Error("not refused");
};

describe("link codes", () => {
  it("LNK-1: round-trips, whitespace and case of the prefix aside, and verifies for its own account", () => {
    fc.assert(
      fc.property(request, (r: LinkRequestTbs) => {
        const code = encodeLinkCode(r);
        expect(code.startsWith(LINK_CODE_PREFIX)).toBe(true);
        const spaced =
          code.toLowerCase().slice(0, LINK_CODE_PREFIX.length) + code.slice(LINK_CODE_PREFIX.length);
        const decoded = decodeLinkCode(` ${spaced.slice(0, 20)}\n ${spaced.slice(20)} `);
        const v = verifyLinkRequest(decoded, r.acct, NOW);
        expect(v.acct).toBe(r.acct);
        expect(Buffer.from(v.sigKey).equals(Buffer.from(r.sigKey))).toBe(true);
        expect(v.name).toBe(r.name);
        expect(v.confirmation).toBe(confirmationCode(r));
        expect(v.confirmation).toMatch(/^\d{4}-\d{4}-\d{4}$/);
      }),
      // Each confirmation is ~2^15 hashes (LNK-10): fewer runs keep the file fast.
      { numRuns: 20 },
    );
  });

  it("LNK-5: any change to the code changes the confirmation code (or breaks the code)", () => {
    fc.assert(
      fc.property(request, fc.nat(), fc.integer({ min: 1, max: 255 }), (r, at, flip) => {
        const code = encodeLinkCode(r);
        const payload = Buffer.from(code.slice(LINK_CODE_PREFIX.length), "base64url");
        const i = at % payload.length;
        payload[i] = payload[i]! ^ flip;
        let other;
        try {
          other = decodeLinkCode(LINK_CODE_PREFIX + payload.toString("base64url"));
        } catch (e) {
          expect((e as ClientError).code).toBe("bad_link_code");
          return;
        }
        expect(confirmationCode(other)).not.toBe(confirmationCode(r));
      }),
      { numRuns: 20 },
    );
  });

  it("LNK-2: garbage, truncated and oversized codes are refused with a clear error", async () => {
    const r = {
      acct: "alice@a.test",
      sigKey: (await generateSigningKeyPair()).publicKey,
      name: "phone",
      createdAt: NOW,
    };
    const code = encodeLinkCode(r);
    expect(refused(() => decodeLinkCode("hello"))).toContain(`does not start with ${LINK_CODE_PREFIX}`);
    expect(refused(() => decodeLinkCode(`${LINK_CODE_PREFIX}!!!`))).toContain("damaged");
    for (let cut = LINK_CODE_PREFIX.length; cut < code.length - 1; cut += 7) {
      refused(() => decodeLinkCode(code.slice(0, cut)));
    }
    refused(() => decodeLinkCode(`${code}AAAA`)); // trailing bytes
    expect(refused(() => decodeLinkCode(LINK_CODE_PREFIX + "A".repeat(100_000)))).toContain("too long");
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (s) => {
        refused(() => decodeLinkCode(LINK_CODE_PREFIX + s + "!"));
      }),
    );
  });

  it("LNK-3, LNK-4: only for the approving device's account, at most an hour old, not from the future", async () => {
    const sigKey = (await generateSigningKeyPair()).publicKey;
    const at = (createdAt: number, who = "alice@a.test", name = "phone") =>
      decodeLinkCode(encodeLinkCode({ acct: who, sigKey, name, createdAt }));
    expect(refused(() => verifyLinkRequest(at(NOW, "bob@a.test"), "alice@a.test", NOW))).toContain(
      "The code is for bob@a.test",
    );
    expect(refused(() => verifyLinkRequest(at(NOW, "Alice@A.test"), "alice@a.test", NOW))).toContain(
      "canonical",
    );
    expect(refused(() => verifyLinkRequest(at(NOW - 3601), "alice@a.test", NOW))).toContain(
      "more than an hour",
    );
    expect(refused(() => verifyLinkRequest(at(NOW + 400), "alice@a.test", NOW))).toContain("future");
    expect(
      refused(() => verifyLinkRequest(at(NOW, "alice@a.test", "evil\u202etxt"), "alice@a.test", NOW)),
    ).toContain("control characters");
    expect(verifyLinkRequest(at(NOW - 3600), "alice@a.test", NOW).acct).toBe("alice@a.test");
  });

  it("LNK-10: the confirmation code is stretched (2^15 chained SHA-256), so grinding a substitute costs ~2^55 hashes", () => {
    // A substitute code may vary its name (zero-width characters look the same), its time (an hour of
    // seconds) and its key: unstretched, 12 digits fall to ~2^40 SHA-256, minutes on one GPU.
    const r = { acct: "alice@a.test", sigKey: new Uint8Array(32).fill(7), name: "Phone", createdAt: NOW };
    const payload = Buffer.from(encodeLinkCode(r).slice(LINK_CODE_PREFIX.length), "base64url");
    let h = createHash("sha256").update("mastodon-mls link v2").update(payload).digest();
    for (let i = 0; i < 2 ** 15; i++) h = createHash("sha256").update(h).digest();
    const digits = (h.readBigUInt64BE(0) % 10n ** 12n).toString().padStart(12, "0");
    expect(confirmationCode(r)).toBe(`${digits.slice(0, 4)}-${digits.slice(4, 8)}-${digits.slice(8)}`);
    // And a name the approving device shows the same way gives other digits.
    expect(confirmationCode({ ...r, name: "Phone\u200b" })).not.toBe(confirmationCode(r));
  });

  it("LNK-5: the typed confirmation matches with spaces or dashes, never a prefix or other digits", () => {
    expect(sameConfirmation("1234 5678 9012", "1234-5678-9012")).toBe(true);
    expect(sameConfirmation("123456789012", "1234-5678-9012")).toBe(true);
    expect(sameConfirmation("1234-5678-901", "1234-5678-9012")).toBe(false);
    expect(sameConfirmation("1234-5678-9013", "1234-5678-9012")).toBe(false);
    expect(sameConfirmation("", "")).toBe(false);
  });
});
