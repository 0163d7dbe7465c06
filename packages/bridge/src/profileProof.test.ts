import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PROFILE_FIELD_PATTERN, ProtocolError } from "@mastodon-mls/protocol";
import { generateSigningKeyPair } from "./crypto.js";
import { findMlsField, withMlsField } from "./profileFields.js";
import {
  accountKeyFingerprint,
  buildProfileFieldValue,
  fieldValueText,
  parseProfileFieldValue,
  verifyProfileProof,
} from "./profileProof.js";

const ID = "acct:alice@a.test";
const account = await generateSigningKeyPair();
const value = await buildProfileFieldValue({ identity: ID, accountKey: account, deviceListVersion: 7 });

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

const check = (v: string, identity = ID, key = account.publicKey) =>
  codeOf(() => verifyProfileProof(parseProfileFieldValue(v), identity, key));

describe("profile proof", () => {
  it("builds mls1.<fp>.<ver>.<sig> that parses and verifies (PF-2, PP-1, PP-2)", async () => {
    expect(value).toMatch(PROFILE_FIELD_PATTERN);
    expect(value.split(".")[1]).toBe(accountKeyFingerprint(account.publicKey));
    expect(value.length).toBeLessThan(255);
    const proof = await verifyProfileProof(parseProfileFieldValue(value), ID, account.publicKey);
    expect(proof.deviceListVersion).toBe(7);
    expect(proof.acct).toBe("alice@a.test");
  });

  it("PF-1: parses the value as Mastodon renders it (tags and entities)", () => {
    const forms = [
      `<p>${value}</p>`,
      ` ${value}\n`,
      `<span class="">${value.slice(0, 20)}</span><span class="invisible">${value.slice(20)}</span>`,
      value.replace(/\./g, "&#46;").replace(/m/, "&#x6D;"),
      `<a href="x" rel="nofollow noopener noreferrer me">${value}</a>`,
    ];
    for (const html of forms) expect(parseProfileFieldValue(html).deviceListVersion).toBe(7);
    expect(fieldValueText("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39; &bogus; &#0;")).toBe(
      `a & b <c> "d" 'e' &bogus; &#0;`,
    );
  });

  it("PF-2…PF-4: refuses other shapes, leading zeros and non-canonical base64url", async () => {
    const [, fp, , sig] = value.split(".") as [string, string, string, string];
    const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // The last of 43 characters carries 2 unused bits: setting one names the same bytes, non-canonically.
    const flipLast = (s: string) => s.slice(0, -1) + B64[B64.indexOf(s.at(-1)!) ^ 1]!;
    const bad = [
      value.replace("mls1.", "mls2."),
      `mls1.${fp.slice(1)}.7.${sig}`,
      `mls1.${fp}.07.${sig}`,
      `mls1.${fp}.0.${sig}`,
      `mls1.${fp}.12345678901.${sig}`,
      `mls1.${fp}.7.${sig}.`,
      `${value} extra`,
      `mls1.${flipLast(fp)}.7.${sig}`, // stray bits in the last character: not canonical
    ];
    for (const v of bad)
      expect([v, await codeOf(() => parseProfileFieldValue(v))]).toEqual([v, "invalid_profile_proof"]);
  });

  it("PP-1, PP-2: refuses a tampered fingerprint, version or signature, another acct, another key", async () => {
    const other = await generateSigningKeyPair();
    const [, fp, ver, sig] = value.split(".") as [string, string, string, string];
    const otherFp = accountKeyFingerprint(other.publicKey);
    expect(await check(`mls1.${otherFp}.${ver}.${sig}`)).toBe("invalid_profile_proof"); // fingerprint
    expect(await check(`mls1.${otherFp}.${ver}.${sig}`, ID, other.publicKey)).toBe("invalid_profile_proof");
    expect(await check(`mls1.${fp}.8.${sig}`)).toBe("invalid_profile_proof"); // version
    const sig2 = (
      await buildProfileFieldValue({ identity: ID, accountKey: account, deviceListVersion: 6 })
    ).split(".")[3];
    expect(await check(`mls1.${fp}.${ver}.${sig2}`)).toBe("invalid_profile_proof"); // signature
    expect(await check(value, "acct:mallory@a.test")).toBe("invalid_profile_proof"); // copied onto another account
    expect(await check(value, ID, other.publicKey)).toBe("invalid_profile_proof");
  });

  it("PF-2, PP-2: rejects every single-character change of the value", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: value.length - 1 }),
        fc.constantFrom(..."AZaz09-_.x!<"),
        async (i, ch) => {
          fc.pre(value[i] !== ch);
          expect(await check(value.slice(0, i) + ch + value.slice(i + 1))).toBe("invalid_profile_proof");
        },
      ),
      { numRuns: 200 },
    );
  });

  it("PF-1…PF-4: parses back what it builds, for any version", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 9_999_999_999 }), async (version) => {
        const v = await buildProfileFieldValue({
          identity: ID,
          accountKey: account,
          deviceListVersion: version,
        });
        expect(v).toMatch(PROFILE_FIELD_PATTERN);
        expect(
          (await verifyProfileProof(parseProfileFieldValue(`<p>${v}</p>`), ID, account.publicKey))
            .deviceListVersion,
        ).toBe(version);
      }),
      { numRuns: 30 },
    );
  });

  it("PF-1: the field parser never fails other than with invalid_profile_proof", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        expect(() => parseProfileFieldValue(s)).toThrow(ProtocolError);
      }),
      { numRuns: 300 },
    );
  });
});

describe("profile fields", () => {
  const others = [
    { name: "Pronouns", value: "she/her" },
    { name: "Site", value: "<b>https://alice.example</b> & 'co'" },
  ];

  it("PF-5: exactly one field named MLS", () => {
    expect(findMlsField(others)).toEqual({ kind: "none" });
    expect(findMlsField([...others, { name: "MLS", value }]).kind).toBe("proof");
    expect(findMlsField([{ name: "MLS", value }, ...others, { name: "MLS", value }])).toEqual({
      kind: "duplicate",
      count: 2,
    });
    expect(findMlsField([{ name: "MLS", value: "hello" }]).kind).toBe("malformed");
    expect(findMlsField([{ name: "mls", value }]).kind).toBe("none");
  });

  it("PUB-2: keeps the other fields and their order, replaces MLS in place, drops a duplicate", () => {
    expect(withMlsField(others, value)).toEqual([...others, { name: "MLS", value }]);
    const placed = [others[0]!, { name: "MLS", value: "old" }, others[1]!, { name: "MLS", value: "older" }];
    expect(withMlsField(placed, value)).toEqual([others[0], { name: "MLS", value }, others[1]]);
  });

  it("PUB-3: refuses when all fields are taken; PUB-4: refuses a value the instance would cut", async () => {
    const full = [...others, { name: "a", value: "1" }, { name: "b", value: "2" }];
    expect(await codeOf(() => withMlsField(full, value))).toBe("profile_fields_full");
    expect(withMlsField([...full.slice(0, 3), { name: "MLS", value: "x" }], value)).toHaveLength(4);
    expect(
      await codeOf(() => withMlsField(others, value, { maxFields: 4, valueLimit: value.length - 1 })),
    ).toBe("profile_field_too_long");
    expect(await codeOf(() => withMlsField(others, "x".repeat(256)))).toBe("profile_field_too_long");
  });
});
