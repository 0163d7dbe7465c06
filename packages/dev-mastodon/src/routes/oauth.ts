// Doorkeeper's endpoints as Mastodon configures them: the authorization code grant (with the
// out-of-band redirect and optional PKCE S256) and client credentials; no password grant, no refresh
// tokens, tokens that never expire. Errors are RFC 6749 JSON with Doorkeeper's descriptions.
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { readParams } from "../http/bodies.js";
import { HttpError, htmlError } from "../http/errors.js";
import { stringParam, type ParamMap } from "../http/params.js";
import { isFunctional } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import {
  allKnownScopes,
  DEFAULT_SCOPES,
  OOB_REDIRECT_URI,
  parseScopes,
  SCOPES,
  type Application,
} from "../state/oauth.js";
import type { RouteContext } from "./context.js";
import { authorizePage, codePage, oauthErrorPage } from "./oauthPages.js";

const MESSAGES = {
  access_denied: "The resource owner or authorization server denied the request.",
  invalid_client:
    "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
  invalid_grant:
    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
  invalid_redirect_uri: "The redirect uri included is not valid.",
  invalid_request:
    "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed.",
  invalid_scope: "The requested scope is invalid, unknown, or malformed.",
  unsupported_grant_type: "The authorization grant type is not supported by the authorization server.",
  unsupported_response_type: "The authorization server does not support this response type.",
  invalid_code_challenge_method: "The code challenge method must be S256.",
} as const;
type OAuthErrorCode = keyof typeof MESSAGES;

const NO_STORE = { "cache-control": "no-store", pragma: "no-cache" };

function tokenError(status: number, code: OAuthErrorCode): HttpError {
  const wireCode = code === "invalid_code_challenge_method" ? "invalid_request" : code;
  const headers: Record<string, string> = { ...NO_STORE };
  if (status === 401) {
    headers["www-authenticate"] =
      `Bearer realm="Doorkeeper", error="${wireCode}", error_description="${MESSAGES[code]}"`;
  }
  return new HttpError(status, { error: wireCode, error_description: MESSAGES[code] }, headers);
}

/** Client credentials from HTTP Basic or from the parameters, as Doorkeeper accepts them. */
function clientCredentials(req: FastifyRequest, params: ParamMap): { id?: string; secret?: string } {
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? "");
  if (basic?.[1] !== undefined) {
    const decoded = Buffer.from(basic[1], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon >= 0) {
      return {
        id: decodeURIComponent(decoded.slice(0, colon)),
        secret: decodeURIComponent(decoded.slice(colon + 1)),
      };
    }
  }
  return { id: stringParam(params, "client_id"), secret: stringParam(params, "client_secret") };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function authenticateClient(
  state: InstanceState,
  req: FastifyRequest,
  params: ParamMap,
): Application | undefined {
  const { id, secret } = clientCredentials(req, params);
  if (id === undefined || secret === undefined) return undefined;
  const app = state.oauth.findApplication(id);
  return app !== undefined && sameSecret(app.clientSecret, secret) ? app : undefined;
}

/** Requested scopes (the default `read` when none) if the app and the server allow them all. */
function grantableScopes(app: Application, requested: string | undefined): string[] | undefined {
  const scopes =
    requested === undefined || requested.trim() === "" ? [...DEFAULT_SCOPES] : parseScopes(requested);
  return allKnownScopes(scopes) && scopes.every((s) => app.scopes.includes(s)) ? scopes : undefined;
}

function pkceMatches(challenge: string, verifier: string): boolean {
  return createHash("sha256").update(verifier).digest("base64url") === challenge;
}

function tokenBody(token: { token: string; scopes: readonly string[]; createdAt: Date }) {
  return {
    access_token: token.token,
    token_type: "Bearer",
    scope: token.scopes.join(" "),
    created_at: Math.floor(token.createdAt.getTime() / 1000),
  };
}

type PreAuth =
  | {
      ok: true;
      app: Application;
      redirectUri: string;
      scopes: string[];
      state: string | undefined;
      codeChallenge: string | null;
    }
  | { ok: false; error: HttpError };

function withQuery(uri: string, query: Record<string, string | undefined>): string {
  const url = new URL(uri);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  return url.toString();
}

/**
 * Doorkeeper's PreAuthorization. Until the client and redirect URI are known good, errors are an HTML
 * page; after that they go back to the client in the redirect, except to the out-of-band URI.
 */
function preAuthorize(state: InstanceState, params: ParamMap): PreAuth {
  const page = (status: number, code: OAuthErrorCode) => ({
    ok: false as const,
    error: htmlError(status, oauthErrorPage(MESSAGES[code])),
  });
  const clientId = stringParam(params, "client_id");
  if (clientId === undefined || clientId === "") return page(400, "invalid_request");
  const app = state.oauth.findApplication(clientId);
  if (app === undefined) return page(401, "invalid_client");
  const redirectUri = stringParam(params, "redirect_uri") ?? "";
  if (!app.redirectUris.includes(redirectUri)) return page(400, "invalid_redirect_uri");

  const clientState = stringParam(params, "state");
  const redirectError = (code: OAuthErrorCode) => {
    if (redirectUri === OOB_REDIRECT_URI) return page(400, code);
    const wire = code === "invalid_code_challenge_method" ? "invalid_request" : code;
    const location = withQuery(redirectUri, {
      error: wire,
      error_description: MESSAGES[code],
      state: clientState,
    });
    return { ok: false as const, error: new HttpError(302, "", { location }, "text/html; charset=utf-8") };
  };
  const responseType = stringParam(params, "response_type");
  if (responseType === undefined || responseType === "") return redirectError("invalid_request");
  if (responseType !== "code") return redirectError("unsupported_response_type");
  const scopes = grantableScopes(app, stringParam(params, "scope"));
  if (scopes === undefined) return redirectError("invalid_scope");
  const challenge = stringParam(params, "code_challenge");
  if (
    challenge !== undefined &&
    challenge !== "" &&
    stringParam(params, "code_challenge_method") !== "S256"
  ) {
    return redirectError("invalid_code_challenge_method");
  }
  return {
    ok: true,
    app,
    redirectUri,
    scopes,
    state: clientState,
    codeChallenge: challenge === undefined || challenge === "" ? null : challenge,
  };
}

const PASSED_THROUGH = [
  "client_id",
  "redirect_uri",
  "response_type",
  "scope",
  "state",
  "code_challenge",
  "code_challenge_method",
];

function sendHtml(reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).type("text/html; charset=utf-8").send(html);
}

export function registerOAuthRoutes({ app, state }: RouteContext): void {
  const renderForm = (
    reply: FastifyReply,
    pre: Extract<PreAuth, { ok: true }>,
    params: ParamMap,
    message?: string,
  ) => {
    const hidden = PASSED_THROUGH.flatMap((k): Array<[string, string]> => {
      const v = stringParam(params, k);
      return v === undefined ? [] : [[k, v]];
    });
    const usernames = state.accounts
      .locals()
      .filter(isFunctional)
      .map((a) => a.username);
    const html = authorizePage({
      app: pre.app,
      scopes: pre.scopes,
      hidden,
      usernames,
      domain: state.config.domain,
      ...(message === undefined ? {} : { message }),
    });
    return sendHtml(reply, message === undefined ? 200 : 422, html);
  };

  app.get("/oauth/authorize", async (req, reply) => {
    const params = await readParams(req);
    const pre = preAuthorize(state, params);
    if (!pre.ok) throw pre.error;
    return renderForm(reply, pre, params);
  });

  app.post("/oauth/authorize", async (req, reply) => {
    const params = await readParams(req);
    const pre = preAuthorize(state, params);
    if (!pre.ok) throw pre.error;
    if (stringParam(params, "decision") === "deny") {
      if (pre.redirectUri === OOB_REDIRECT_URI)
        return sendHtml(reply, 400, oauthErrorPage(MESSAGES.access_denied));
      const location = withQuery(pre.redirectUri, {
        error: "access_denied",
        error_description: MESSAGES.access_denied,
        state: pre.state,
      });
      return reply.redirect(location, 302);
    }
    const account = state.accounts.findLocal(stringParam(params, "username") ?? "");
    if (account === undefined || !isFunctional(account)) {
      return renderForm(reply, pre, params, "No usable account by that name on this instance.");
    }
    const grant = state.oauth.createGrant({
      application: pre.app,
      account,
      redirectUri: pre.redirectUri,
      scopes: pre.scopes,
      codeChallenge: pre.codeChallenge,
    });
    if (pre.redirectUri === OOB_REDIRECT_URI) {
      return reply.redirect(`/oauth/authorize/native?code=${encodeURIComponent(grant.code)}`, 302);
    }
    return reply.redirect(withQuery(pre.redirectUri, { code: grant.code, state: pre.state }), 302);
  });

  app.get("/oauth/authorize/native", async (req, reply) => {
    const params = await readParams(req);
    return sendHtml(reply, 200, codePage(stringParam(params, "code") ?? ""));
  });

  app.post("/oauth/token", async (req, reply) => {
    const params = await readParams(req);
    reply.headers(NO_STORE);
    const grantType = stringParam(params, "grant_type");
    if (grantType === undefined || grantType === "") throw tokenError(400, "invalid_request");
    if (grantType !== "authorization_code" && grantType !== "client_credentials") {
      throw tokenError(400, "unsupported_grant_type");
    }
    const client = authenticateClient(state, req, params);
    if (client === undefined) throw tokenError(401, "invalid_client");

    if (grantType === "client_credentials") {
      const scopes = grantableScopes(client, stringParam(params, "scope"));
      if (scopes === undefined) throw tokenError(400, "invalid_scope");
      return tokenBody(state.oauth.issueToken(client, null, scopes));
    }

    const code = stringParam(params, "code");
    const redirectUri = stringParam(params, "redirect_uri");
    if (code === undefined || code === "" || redirectUri === undefined || redirectUri === "") {
      throw tokenError(400, "invalid_request");
    }
    const grant = state.oauth.findUsableGrant(code);
    if (grant === undefined || grant.application !== client || grant.redirectUri !== redirectUri) {
      throw tokenError(400, "invalid_grant");
    }
    if (grant.codeChallenge !== null) {
      const verifier = stringParam(params, "code_verifier");
      if (verifier === undefined || !pkceMatches(grant.codeChallenge, verifier))
        throw tokenError(400, "invalid_grant");
    }
    grant.used = true;
    return tokenBody(state.oauth.issueToken(client, grant.account, grant.scopes));
  });

  app.post("/oauth/revoke", async (req) => {
    const params = await readParams(req);
    const refused = new HttpError(403, {
      error: "unauthorized_client",
      error_description: "You are not authorized to revoke this token",
    });
    const client = authenticateClient(state, req, params);
    if (client === undefined) throw refused;
    const token = state.oauth.findToken(stringParam(params, "token") ?? "");
    // RFC 7009: an unknown token is not an error. A token of another application is.
    if (token === undefined) return {};
    if (token.application !== client) throw refused;
    token.revokedAt ??= new Date();
    return {};
  });

  app.get("/.well-known/oauth-authorization-server", async () => {
    const web = state.webOrigin;
    return {
      issuer: `${web}/`,
      service_documentation: "https://docs.joinmastodon.org/",
      authorization_endpoint: `${web}/oauth/authorize`,
      token_endpoint: `${web}/oauth/token`,
      app_registration_endpoint: `${web}/api/v1/apps`,
      revocation_endpoint: `${web}/oauth/revoke`,
      scopes_supported: [...SCOPES],
      response_types_supported: ["code"],
      response_modes_supported: ["query", "fragment", "form_post"],
      code_challenge_methods_supported: ["S256"],
      grant_types_supported: ["authorization_code", "client_credentials"],
      token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
    };
  });
}
