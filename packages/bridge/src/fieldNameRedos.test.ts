import { describe, expect, it } from "vitest";
import { lookupAcct } from "./acctLookup.js";
import { findMlsField } from "./profileFields.js";
import { fieldValueText } from "./profileProof.js";
import { DEFAULT_MAX_BYTES, type HttpGet } from "./safeHttp.js";

// A hostile instance's profile field names and values (found by an audit): stripping tags from a field of
// 250,000 `<` without `>` took about 25 s of synchronous work, beyond any deadline of the lookup.

const json = (url: string, value: unknown) => ({
  status: 200,
  headers: { "content-type": "application/json" },
  body: new TextEncoder().encode(JSON.stringify(value)),
  url,
});

describe("profile fields from a hostile instance", () => {
  it("strips a run of `<` in linear time, and tags as before", () => {
    const started = performance.now();
    expect(fieldValueText("<".repeat(250_000))).toBe("<".repeat(250_000));
    expect(fieldValueText(`${"<".repeat(100_000)}x>`)).toBe("<".repeat(99_999));
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(fieldValueText('<a href="x"><span class="invisible">https://</span>MLS</a>')).toBe("https://MLS");
    expect(findMlsField([{ name: "<b>MLS</b>", value: "x" }]).kind).toBe("malformed");
  });

  it("a lookup meeting a field name of 250,000 `<` ends at once, and finds no proof", async () => {
    const self = "https://evil.test/users/mallory";
    const account = { acct: "mallory", uri: self, fields: [{ name: "<".repeat(250_000), value: "x" }] };
    expect(JSON.stringify(account).length).toBeLessThan(DEFAULT_MAX_BYTES);
    const get: HttpGet = (url) => {
      const u = new URL(url);
      if (u.pathname === "/.well-known/webfinger") {
        return Promise.resolve(
          json(url, {
            subject: "acct:mallory@evil.test",
            links: [{ rel: "self", type: "application/activity+json", href: self }],
          }),
        );
      }
      if (u.pathname === "/api/v1/accounts/lookup") return Promise.resolve(json(url, account));
      return Promise.resolve(json(url, { domain: "evil.test" }));
    };
    const started = performance.now();
    const result = await lookupAcct("mallory@evil.test", { get });
    expect(result.kind).toBe("no-proof");
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});
