import { createHash } from "node:crypto";
import { createOAuthAPIClient, createRestAPIClient, MastoHttpError } from "masto";
import { describe, expect, it } from "vitest";
import type { DevMastodon } from "../devMastodon.js";
import { bearer, json, useInstances, type Json } from "../testSupport.js";

const start = useInstances();
const CALLBACK = "https://client.example/callback";
const OOB = "urn:ietf:wg:oauth:2.0:oob";
const INVALID_GRANT =
  "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";

async function registerApp(
  m: DevMastodon,
  redirect = CALLBACK,
  scopes = "read write profile",
): Promise<Json> {
  const res = await fetch(`${m.url}/api/v1/apps`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_name: "Test client", redirect_uris: [redirect], scopes }),
  });
  expect(res.status).toBe(200);
  return json(res);
}

function form(url: string, fields: Record<string, string>, init: RequestInit = {}) {
  return fetch(url, { method: "POST", body: new URLSearchParams(fields), redirect: "manual", ...init });
}

/** Goes through the approval page as a person would: the page's form, submitted as alice. */
async function approve(m: DevMastodon, app: Json, extra: Record<string, string> = {}): Promise<string> {
  const query = new URLSearchParams({
    response_type: "code",
    client_id: app.client_id,
    redirect_uri: app.redirect_uris[0],
    scope: "read profile",
    state: "s-1",
    ...extra,
  });
  const page = await fetch(`${m.url}/oauth/authorize?${query}`);
  expect(page.status).toBe(200);
  const html = await page.text();
  const hidden: Record<string, string> = {};
  for (const [, name = "", value = ""] of html.matchAll(
    /<input type="hidden" name="([^"]+)" value="([^"]*)">/g,
  )) {
    hidden[name] = value;
  }
  expect(hidden).toMatchObject({ client_id: app.client_id, state: "s-1" });
  const res = await form(`${m.url}/oauth/authorize`, { ...hidden, username: "alice", decision: "approve" });
  expect(res.status).toBe(302);
  return res.headers.get("location") ?? "";
}

describe("POST /api/v1/apps", () => {
  it("registers an application from JSON or a form and returns its credentials", async () => {
    const m = await start();
    const app = await registerApp(m);
    expect(app).toMatchObject({
      name: "Test client",
      website: null,
      scopes: ["read", "write", "profile"],
      redirect_uris: [CALLBACK],
      redirect_uri: CALLBACK,
      client_secret_expires_at: 0,
    });
    expect(app.id).toMatch(/^\d+$/);
    expect(app.client_id).toMatch(/^[\w-]{43}$/);
    expect(app.client_secret).toMatch(/^[\w-]{43}$/);
    expect(typeof app.vapid_key).toBe("string");
    const viaForm = await json(await form(`${m.url}/api/v1/apps`, { client_name: "F", redirect_uris: OOB }));
    expect([viaForm.scopes, viaForm.redirect_uris]).toEqual([["read"], [OOB]]);
  });

  it("answers validation failures with 422", async () => {
    const m = await start();
    const cases: Array<[Record<string, string>, string]> = [
      [{ redirect_uris: OOB }, "Validation failed: Application name can't be blank"],
      [{ client_name: "x" }, "Validation failed: Redirect URI can't be blank"],
      [
        { client_name: "x", redirect_uris: "/relative" },
        "Validation failed: Redirect URI must be an absolute URI.",
      ],
      [
        { client_name: "x", redirect_uris: OOB, scopes: "read everything" },
        "Validation failed: Scopes doesn't match configured on the server.",
      ],
    ];
    for (const [fields, error] of cases) {
      const res = await form(`${m.url}/api/v1/apps`, fields);
      expect([res.status, await json(res)]).toEqual([422, { error }]);
    }
  });
});

describe("authorization code grant", () => {
  it("goes from the approval page through the redirect to a working token", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m);
    const location = new URL(await approve(m, app));
    expect(location.origin + location.pathname).toBe(CALLBACK);
    expect(location.searchParams.get("state")).toBe("s-1");
    const code = location.searchParams.get("code") ?? "";
    const exchange = {
      grant_type: "authorization_code",
      code,
      redirect_uri: CALLBACK,
      client_id: app.client_id,
      client_secret: app.client_secret,
    };
    const res = await form(`${m.url}/oauth/token`, exchange);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const token = await json(res);
    expect(token).toMatchObject({ token_type: "Bearer", scope: "read profile" });
    expect(Number.isInteger(token.created_at)).toBe(true);
    const me = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, {
      headers: bearer(String(token.access_token)),
    });
    expect((await json(me)).username).toBe("alice");

    const again = await form(`${m.url}/oauth/token`, exchange);
    expect([again.status, await json(again)]).toEqual([
      400,
      { error: "invalid_grant", error_description: INVALID_GRANT },
    ]);
  });

  it("refuses a wrong client secret with 401 invalid_client", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m);
    const code = new URL(await approve(m, app)).searchParams.get("code") ?? "";
    const res = await form(`${m.url}/oauth/token`, {
      grant_type: "authorization_code",
      code,
      redirect_uri: CALLBACK,
      client_id: app.client_id,
      client_secret: "wrong",
    });
    expect(res.status).toBe(401);
    expect((await json(res)).error).toBe("invalid_client");
  });

  it("shows the code on a page for the out-of-band redirect URI", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m, OOB, "read");
    const location = await approve(m, app, { scope: "read" });
    expect(location).toMatch(/^\/oauth\/authorize\/native\?code=/);
    const code = new URL(location, m.url).searchParams.get("code") ?? "";
    expect(await (await fetch(new URL(location, m.url))).text()).toContain(`value="${code}"`);
    const token = await createOAuthAPIClient({ url: m.url }).token.create({
      grantType: "authorization_code",
      code,
      clientId: app.client_id,
      clientSecret: app.client_secret,
      redirectUri: OOB,
    });
    expect(token.scope).toBe("read");
  });

  it("checks the PKCE verifier when a challenge was given, and accepts only S256", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m);
    const verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const code =
      new URL(
        await approve(m, app, { code_challenge: challenge, code_challenge_method: "S256" }),
      ).searchParams.get("code") ?? "";
    const exchange = {
      grant_type: "authorization_code",
      code,
      redirect_uri: CALLBACK,
      client_id: app.client_id,
      client_secret: app.client_secret,
    };
    expect((await form(`${m.url}/oauth/token`, { ...exchange, code_verifier: "wrong" })).status).toBe(400);
    expect((await form(`${m.url}/oauth/token`, { ...exchange, code_verifier: verifier })).status).toBe(200);

    const plain = new URLSearchParams({
      response_type: "code",
      client_id: app.client_id,
      redirect_uri: CALLBACK,
      code_challenge: verifier,
      code_challenge_method: "plain",
    });
    const refused = await fetch(`${m.url}/oauth/authorize?${plain}`, { redirect: "manual" });
    expect(refused.status).toBe(302);
    expect(new URL(refused.headers.get("location") ?? "").searchParams.get("error")).toBe("invalid_request");
  });

  it("shows an error page for an unknown client or redirect URI and redirects other errors", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m, CALLBACK, "read");
    const authorize = (params: Record<string, string>) =>
      fetch(`${m.url}/oauth/authorize?${new URLSearchParams({ response_type: "code", ...params })}`, {
        redirect: "manual",
      });
    const unknown = await authorize({ client_id: "nope", redirect_uri: CALLBACK });
    expect([unknown.status, unknown.headers.get("content-type")]).toEqual([401, "text/html; charset=utf-8"]);
    expect(
      (await authorize({ client_id: app.client_id, redirect_uri: "https://evil.example/" })).status,
    ).toBe(400);
    const scope = await authorize({
      client_id: app.client_id,
      redirect_uri: CALLBACK,
      scope: "write",
      state: "z",
    });
    const location = new URL(scope.headers.get("location") ?? "");
    expect([location.searchParams.get("error"), location.searchParams.get("state")]).toEqual([
      "invalid_scope",
      "z",
    ]);
  });

  it("redirects with access_denied when the user denies", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m);
    const res = await form(`${m.url}/oauth/authorize`, {
      response_type: "code",
      client_id: app.client_id,
      redirect_uri: CALLBACK,
      decision: "deny",
    });
    expect(new URL(res.headers.get("location") ?? "").searchParams.get("error")).toBe("access_denied");
  });
});

describe("client credentials, grant errors and revocation", () => {
  it("issues an app-only token (masto.js, JSON) that cannot act as a user", async () => {
    const m = await start();
    const app = await registerApp(m);
    const token = await createOAuthAPIClient({ url: m.url }).token.create({
      grantType: "client_credentials",
      clientId: app.client_id,
      clientSecret: app.client_secret,
      redirectUri: CALLBACK,
      scope: "read write",
    });
    expect(token.scope).toBe("read write");
    const client = createRestAPIClient({ url: m.url, accessToken: token.accessToken });
    expect((await client.v1.apps.verifyCredentials()).name).toBe("Test client");
    const error: unknown = await client.v1.accounts.verifyCredentials().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MastoHttpError);
    expect((error as MastoHttpError).statusCode).toBe(422);
  });

  it("answers RFC 6749 errors for bad grant requests", async () => {
    const m = await start();
    const app = await registerApp(m, CALLBACK, "read");
    const creds = { client_id: app.client_id, client_secret: app.client_secret };
    const cases: Array<[Record<string, string>, number, string]> = [
      [{ ...creds }, 400, "invalid_request"],
      [{ ...creds, grant_type: "password", username: "a", password: "b" }, 400, "unsupported_grant_type"],
      [{ ...creds, grant_type: "client_credentials", scope: "write" }, 400, "invalid_scope"],
      [{ grant_type: "client_credentials" }, 401, "invalid_client"],
      [
        { ...creds, grant_type: "authorization_code", code: "nope", redirect_uri: CALLBACK },
        400,
        "invalid_grant",
      ],
    ];
    for (const [fields, status, error] of cases) {
      const res = await form(`${m.url}/oauth/token`, fields);
      const body = await json(res);
      expect([res.status, body.error], JSON.stringify(fields)).toEqual([status, error]);
      expect(typeof body.error_description).toBe("string");
    }
  });

  it("revokes a token for its own application only", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const app = await registerApp(m);
    const other = await registerApp(m);
    const code = new URL(await approve(m, app)).searchParams.get("code") ?? "";
    const { access_token: token } = (await json(
      await form(`${m.url}/oauth/token`, {
        grant_type: "authorization_code",
        code,
        redirect_uri: CALLBACK,
        client_id: app.client_id,
        client_secret: app.client_secret,
      }),
    )) as { access_token: string };
    const byOther = await form(`${m.url}/oauth/revoke`, {
      token,
      client_id: other.client_id,
      client_secret: other.client_secret,
    });
    expect([byOther.status, (await json(byOther)).error]).toEqual([403, "unauthorized_client"]);
    const creds = { client_id: app.client_id, client_secret: app.client_secret };
    expect(await json(await form(`${m.url}/oauth/revoke`, { token: "unknown", ...creds }))).toEqual({});
    const revoked = await form(`${m.url}/oauth/revoke`, { token, ...creds });
    expect([revoked.status, await json(revoked)]).toEqual([200, {}]);
    const use = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, { headers: bearer(token) });
    expect([use.status, await json(use)]).toEqual([401, { error: "The access token was revoked" }]);
  });
});
