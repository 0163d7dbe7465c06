// Bearer tokens the way Mastodon's controllers check them, in the same order and with the same answers:
//   require_authenticated_user! (only when unauthenticated API access is disabled) → 401
//   doorkeeper_authorize!(scopes): no, unknown or revoked token → 401; none of the scopes → 403
//   require_user!: an app-only token → 422; a suspended, deleted or moved account → 403
// Each route calls the steps its Mastodon controller declares.
import type { FastifyInstance, FastifyRequest } from "fastify";
import { isFunctional, type LocalAccount } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import type { AccessToken } from "../state/oauth.js";
import { apiError } from "./errors.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Served even when unauthenticated API access is disabled (instance info, app registration). */
    alwaysPublic?: boolean;
  }
}

const DESCRIPTIONS = {
  unknown: "The access token is invalid",
  revoked: "The access token was revoked",
} as const;
const INSUFFICIENT_SCOPE = "The request requires higher privileges than provided by the access token.";

function wwwAuthenticate(error: string, description: string): Record<string, string> {
  return {
    "www-authenticate": `Bearer realm="Doorkeeper", error="${error}", error_description="${description}"`,
  };
}

/** Doorkeeper's access_token_methods: the Authorization header, then `access_token` or `bearer_token`. */
export function presentedToken(req: FastifyRequest): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m?.[1] !== undefined) return m[1];
  }
  const query = new URLSearchParams(req.url.includes("?") ? req.url.slice(req.url.indexOf("?") + 1) : "");
  return query.get("access_token") ?? query.get("bearer_token") ?? undefined;
}

/** `doorkeeper_token`: the token record presented, revoked ones included; unknown strings give none. */
export function doorkeeperToken(state: InstanceState, req: FastifyRequest): AccessToken | undefined {
  const presented = presentedToken(req);
  return presented === undefined ? undefined : state.oauth.findToken(presented);
}

/** `current_user`: the token's resource owner, whatever the token's state. */
export function currentUser(state: InstanceState, req: FastifyRequest): LocalAccount | undefined {
  return doorkeeperToken(state, req)?.account ?? undefined;
}

/**
 * `doorkeeper_authorize!(*scopes)`: any one of the scopes is enough; with no scopes, any valid token
 * (what `valid_doorkeeper_token?` checks in Apps::CredentialsController).
 */
export function authorize(state: InstanceState, req: FastifyRequest, ...scopes: string[]): AccessToken {
  const token = doorkeeperToken(state, req);
  if (token === undefined || token.revokedAt !== null) {
    const description = token === undefined ? DESCRIPTIONS.unknown : DESCRIPTIONS.revoked;
    throw apiError(401, description, wwwAuthenticate("invalid_token", description));
  }
  if (scopes.length > 0 && !scopes.some((s) => token.scopes.includes(s))) {
    throw apiError(
      403,
      "This action is outside the authorized scopes",
      wwwAuthenticate("insufficient_scope", INSUFFICIENT_SCOPE),
    );
  }
  return token;
}

/** `authorize_if_got_token!`: anonymous requests pass; a presented token must be valid and scoped. */
export function authorizeIfGotToken(
  state: InstanceState,
  req: FastifyRequest,
  ...scopes: string[]
): AccessToken | undefined {
  return doorkeeperToken(state, req) === undefined ? undefined : authorize(state, req, ...scopes);
}

/** `require_user!`. */
export function requireUser(token: AccessToken): LocalAccount {
  const account = token.account;
  if (account === null) throw apiError(422, "This method requires an authenticated user");
  if (!isFunctional(account)) throw apiError(403, "Your login is currently disabled");
  return account;
}

/**
 * `require_potential_user!` of verify_credentials: with `allow_nonfunctional`, a suspended or moved
 * account may still read its own credentials.
 */
export function requirePotentialUser(token: AccessToken, allowNonfunctional: boolean): LocalAccount {
  if (!allowNonfunctional) return requireUser(token);
  if (token.account === null) throw apiError(422, "This method requires an authenticated user");
  return token.account;
}

/** Api::BaseController's `require_authenticated_user!, if: :disallow_unauthenticated_api_access?`. */
export function installUnauthenticatedGate(app: FastifyInstance, state: InstanceState): void {
  app.addHook("preHandler", async (req) => {
    if (state.unauthenticatedApi || !req.url.startsWith("/api/")) return;
    // Unmatched paths reach Rails' catch-all, which is not an API controller: they stay 404.
    if (req.routeOptions.url === undefined || req.routeOptions.config.alwaysPublic === true) return;
    if (currentUser(state, req) === undefined)
      throw apiError(401, "This method requires an authenticated user");
  });
}
