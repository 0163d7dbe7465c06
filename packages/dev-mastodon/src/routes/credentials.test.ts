import { createRestAPIClient, MastoHttpError } from "masto";
import { describe, expect, it } from "vitest";
import { bearer, json, pluck, useInstances } from "../testSupport.js";

const start = useInstances();

async function aliceWithToken(scopes = "read write") {
  const m = await start({ accounts: [{ username: "alice", displayName: "Alice" }] });
  return { m, token: m.issueToken({ username: "alice", scopes }) };
}

function patch(url: string, token: string, body: BodyInit, headers: Record<string, string> = {}) {
  return fetch(`${url}/api/v1/accounts/update_credentials`, {
    method: "PATCH",
    headers: { ...bearer(token), ...headers },
    body,
  });
}

describe("verify_credentials", () => {
  it("accepts profile, read or read:accounts and returns the raw fields under source", async () => {
    const m = await start({
      accounts: [{ username: "alice", fields: [{ name: "Site", value: "https://example.com/it's" }] }],
    });
    for (const scopes of ["profile", "read", "read:accounts"]) {
      const res = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, {
        headers: bearer(m.issueToken({ username: "alice", scopes, app: scopes })),
      });
      expect(res.status).toBe(200);
      const body = await json(res);
      expect(body.source.fields).toEqual([
        { name: "Site", value: "https://example.com/it's", verified_at: null },
      ]);
      expect(body.fields[0].value).toContain("it&#39;s");
    }
  });

  it("answers Doorkeeper's errors: no or unknown token 401, revoked 401, wrong scope 403", async () => {
    const { m, token } = await aliceWithToken("write");
    const url = `${m.url}/api/v1/accounts/verify_credentials`;
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(await json(none)).toEqual({ error: "The access token is invalid" });
    expect(none.headers.get("www-authenticate")).toContain('error="invalid_token"');
    const unknown = await fetch(url, { headers: bearer("not-a-token") });
    expect([unknown.status, await json(unknown)]).toEqual([401, { error: "The access token is invalid" }]);
    const scoped = await fetch(url, { headers: bearer(token) });
    expect([scoped.status, await json(scoped)]).toEqual([
      403,
      { error: "This action is outside the authorized scopes" },
    ]);
    m.revokeToken(token);
    const revoked = await fetch(url, { headers: bearer(token) });
    expect([revoked.status, await json(revoked)]).toEqual([401, { error: "The access token was revoked" }]);
  });

  it("refuses an app-only token with 422 and a suspended or moved user with 403", async () => {
    const { m, token } = await aliceWithToken();
    const url = `${m.url}/api/v1/accounts/verify_credentials`;
    const appOnly = await fetch(url, { headers: bearer(m.issueAppToken({ scopes: "read" })) });
    expect([appOnly.status, await json(appOnly)]).toEqual([
      422,
      { error: "This method requires an authenticated user" },
    ]);
    m.suspend("alice");
    const suspended = await fetch(url, { headers: bearer(token) });
    expect([suspended.status, await json(suspended)]).toEqual([
      403,
      { error: "Your login is currently disabled" },
    ]);
    const allowed = await fetch(`${url}?allow_nonfunctional=true`, { headers: bearer(token) });
    expect(allowed.status).toBe(200);
    expect((await json(allowed)).suspended).toBe(true);
    m.unsuspend("alice");
    m.createAccount({ username: "alice2" });
    m.move("alice", "alice2");
    const moved = await fetch(url, { headers: bearer(token) });
    expect(moved.status).toBe(403);
  });

  it("forgets the tokens of a deleted account", async () => {
    const { m, token } = await aliceWithToken();
    m.deleteAccount("alice");
    const res = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, { headers: bearer(token) });
    expect([res.status, await json(res)]).toEqual([401, { error: "The access token is invalid" }]);
  });
});

describe("update_credentials", () => {
  it("needs write or write:accounts", async () => {
    const { m, token } = await aliceWithToken("read");
    const res = await patch(m.url, token, new URLSearchParams({ display_name: "x" }));
    expect(res.status).toBe(403);
    const ok = await patch(
      m.url,
      m.issueToken({ username: "alice", scopes: "write:accounts", app: "w" }),
      "",
    );
    expect(ok.status).toBe(200);
  });

  it("takes multipart bodies with Rails bracket keys and replaces the whole set", async () => {
    const { m, token } = await aliceWithToken();
    const first = new FormData();
    first.append("fields_attributes[0][name]", "A");
    first.append("fields_attributes[0][value]", "1");
    first.append("fields_attributes[1][name]", "B");
    first.append("fields_attributes[1][value]", "2");
    first.append("avatar", new Blob([new Uint8Array([1, 2, 3])], { type: "image/png" }), "a.png");
    expect((await patch(m.url, token, first)).status).toBe(200);
    const second = new FormData();
    second.append("fields_attributes[0][name]", "C");
    second.append("fields_attributes[0][value]", "3");
    const body = await json(await patch(m.url, token, second));
    expect(body.source.fields).toEqual([{ name: "C", value: "3", verified_at: null }]);
  });

  it("takes urlencoded bodies, the hash form in the order sent, and drops blank rows", async () => {
    const { m, token } = await aliceWithToken();
    const form =
      "fields_attributes[2][name]=Two&fields_attributes[2][value]=2&" +
      "fields_attributes[0][name]=&fields_attributes[0][value]=&" +
      "fields_attributes[1][name]=One&fields_attributes[1][value]=1&display_name=+Alice+";
    const res = await patch(m.url, token, form, { "content-type": "application/x-www-form-urlencoded" });
    const body = await json(res);
    expect(pluck(body.source.fields, "name")).toEqual(["Two", "One"]);
    expect(body.display_name).toBe("Alice");
  });

  it("takes JSON with fields_attributes as an array or as a hash keyed by index", async () => {
    const { m, token } = await aliceWithToken();
    const asArray = { fields_attributes: [{ name: "X", value: "x" }] };
    const a = await json(
      await patch(m.url, token, JSON.stringify(asArray), { "content-type": "application/json" }),
    );
    expect(a.source.fields).toEqual([{ name: "X", value: "x", verified_at: null }]);
    const asHash = { fields_attributes: { "0": { name: "Y", value: "y" }, "1": { name: "Z", value: "z" } } };
    const b = await json(
      await patch(m.url, token, JSON.stringify(asHash), { "content-type": "application/json" }),
    );
    expect(pluck(b.source.fields, "name")).toEqual(["Y", "Z"]);
  });

  it("refuses a fifth field with ValidationErrorFormatter's body and saves nothing", async () => {
    const { m, token } = await aliceWithToken();
    const form = new URLSearchParams({ display_name: "Changed" });
    for (let i = 0; i < 5; i++) {
      form.append(`fields_attributes[${i}][name]`, `n${i}`);
      form.append(`fields_attributes[${i}][value]`, `v${i}`);
    }
    const res = await patch(m.url, token, form);
    expect(res.status).toBe(422);
    expect(await json(res)).toEqual({
      error: "Validation failed: Fields is too long (maximum is 4 characters)",
      details: { fields: [{ error: "ERR_TOO_LONG", description: "is too long (maximum is 4 characters)" }] },
    });
    const after = await json(
      await fetch(`${m.url}/api/v1/accounts/verify_credentials`, { headers: bearer(token) }),
    );
    expect([after.display_name, after.source.fields]).toEqual(["Alice", []]);
  });

  it("refuses a value without a name", async () => {
    const { m, token } = await aliceWithToken();
    const res = await patch(
      m.url,
      token,
      new URLSearchParams({ "fields_attributes[0][name]": "  ", "fields_attributes[0][value]": "orphan" }),
    );
    expect([res.status, await json(res)]).toEqual([
      422,
      {
        error: "Validation failed: Fields contains values with missing labels",
        details: {
          fields: [
            {
              error: "ERR_FIELDS_WITH_VALUES_MISSING_LABELS",
              description: "contains values with missing labels",
            },
          ],
        },
      },
    ]);
  });

  it("cuts long names and values to 255 characters instead of refusing them", async () => {
    const { m, token } = await aliceWithToken();
    const body = await json(
      await patch(
        m.url,
        token,
        new URLSearchParams({
          "fields_attributes[0][name]": "n".repeat(300),
          "fields_attributes[0][value]": "v".repeat(300),
        }),
      ),
    );
    expect(body.source.fields[0]).toEqual({
      name: "n".repeat(255),
      value: "v".repeat(255),
      verified_at: null,
    });
  });

  it("keeps verified_at for an unchanged value only", async () => {
    const m = await start({
      accounts: [
        {
          username: "alice",
          fields: [
            { name: "Site", value: "https://example.com" },
            { name: "Blog", value: "https://blog.example" },
          ],
        },
      ],
    });
    const at = new Date("2025-01-02T03:04:05.678Z");
    m.markFieldVerified("alice", "Site", at);
    m.markFieldVerified("alice", "Blog", at);
    const token = m.issueToken({ username: "alice", scopes: "write" });
    const form = new URLSearchParams({
      "fields_attributes[0][name]": "Website",
      "fields_attributes[0][value]": "https://example.com",
      "fields_attributes[1][name]": "Blog",
      "fields_attributes[1][value]": "https://blog.example/moved",
    });
    const body = await json(await patch(m.url, token, form));
    expect(pluck(body.fields, "verified_at")).toEqual(["2025-01-02T03:04:05.678+00:00", null]);
  });

  it("refuses a display name over 30 characters", async () => {
    const { m, token } = await aliceWithToken();
    const res = await patch(m.url, token, new URLSearchParams({ display_name: "x".repeat(31) }));
    expect([res.status, await json(res)]).toEqual([
      422,
      {
        error: "Validation failed: Display name is too long (maximum is 30 characters)",
        details: {
          display_name: [{ error: "ERR_TOO_LONG", description: "is too long (maximum is 30 characters)" }],
        },
      },
    ]);
  });
});

describe("masto.js 7.12 against the fake", () => {
  it("publishes a field while keeping the others, reading them from source.fields", async () => {
    const m = await start({
      accounts: [
        {
          username: "alice",
          fields: [
            { name: "Pronouns", value: "she/her" },
            { name: "Site", value: "https://example.com" },
          ],
        },
      ],
    });
    const client = createRestAPIClient({
      url: m.url,
      accessToken: m.issueToken({ username: "alice", scopes: "read write" }),
    });
    const me = await client.v1.accounts.verifyCredentials();
    const proof = `mls1.${"a".repeat(43)}.1.${"b".repeat(86)}`;
    // Passing the source fields back as they came (verifiedAt included) is what a client naturally does.
    const updated = await client.v1.accounts.updateCredentials({
      fieldsAttributes: [...me.source.fields, { name: "MLS", value: proof }],
    });
    expect(updated.source.fields.map((f) => [f.name, f.value])).toEqual([
      ["Pronouns", "she/her"],
      ["Site", "https://example.com"],
      ["MLS", proof],
    ]);
    const looked = await client.v1.accounts.lookup({ acct: "alice" });
    expect(looked.fields.find((f) => f.name === "MLS")?.value).toBe(proof);
  });

  it("surfaces the fifth-field refusal as MastoHttpError 422 with details", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const client = createRestAPIClient({
      url: m.url,
      accessToken: m.issueToken({ username: "alice", scopes: "write" }),
    });
    const fields = Array.from({ length: 5 }, (_, i) => ({ name: `n${i}`, value: "v" }));
    const error: unknown = await client.v1.accounts
      .updateCredentials({ fieldsAttributes: fields })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MastoHttpError);
    expect((error as MastoHttpError).statusCode).toBe(422);
    expect((error as MastoHttpError).details).toEqual({
      fields: [{ error: "ERR_TOO_LONG", description: "is too long (maximum is 4 characters)" }],
    });
  });
});
