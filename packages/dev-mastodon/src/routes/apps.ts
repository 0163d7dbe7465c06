// POST /api/v1/apps (Api::V1::AppsController) and GET /api/v1/apps/verify_credentials. Invalid input is
// answered like ActiveRecord::RecordInvalid is in the API: 422 {"error":"Validation failed: …"}.
import { authorize } from "../http/auth.js";
import { readParams } from "../http/bodies.js";
import { apiError } from "../http/errors.js";
import { stringParam, type ParamMap } from "../http/params.js";
import { tooLong, ValidationErrors } from "../model/validation.js";
import { renderApplication, renderCredentialApplication } from "../render/application.js";
import { allKnownScopes, DEFAULT_SCOPES, OOB_REDIRECT_URI, parseScopes } from "../state/oauth.js";
import type { RouteContext } from "./context.js";

/** Doorkeeper's RedirectUriValidator, with Mastodon's messages. */
function redirectUriError(uri: string): string | undefined {
  if (uri === OOB_REDIRECT_URI) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(uri);
  } catch {
    return /^[a-z][a-z0-9+.-]*:/i.test(uri) ? "must be a valid URI." : "must be an absolute URI.";
  }
  if (parsed.hash !== "" || uri.includes("#")) return "cannot contain a fragment.";
  return undefined;
}

function redirectUris(params: ParamMap): string[] {
  const raw = params.get("redirect_uris");
  const list = Array.isArray(raw)
    ? raw.filter((v) => typeof v === "string")
    : [stringParam(params, "redirect_uris") ?? ""];
  return list
    .flatMap((v) => v.split(/\r?\n/))
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

function validWebsite(website: string): boolean {
  try {
    const url = new URL(website);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}

export function registerAppRoutes({ app, state }: RouteContext): void {
  app.post("/api/v1/apps", { config: { alwaysPublic: true } }, async (req) => {
    const params = await readParams(req);
    const name = (stringParam(params, "client_name") ?? "").trim();
    const uris = redirectUris(params);
    const scopesParam = stringParam(params, "scopes");
    const scopes =
      scopesParam === undefined || scopesParam.trim() === "" ? [...DEFAULT_SCOPES] : parseScopes(scopesParam);
    const website = stringParam(params, "website")?.trim() ?? "";

    const errors = new ValidationErrors();
    if (name === "") errors.add("name", "Application name", "blank", "can't be blank");
    if (uris.length === 0) errors.add("redirect_uri", "Redirect URI", "blank", "can't be blank");
    for (const uri of uris) {
      const problem = redirectUriError(uri);
      if (problem !== undefined) errors.add("redirect_uri", "Redirect URI", "invalid_uri", problem);
    }
    if (!allKnownScopes(scopes)) {
      errors.add("scopes", "Scopes", "not_match_configured", "doesn't match configured on the server.");
    }
    if ([...name].length > 60) errors.add("name", "Application name", "too_long", tooLong(60));
    if (website !== "" && !validWebsite(website))
      errors.add("website", "Application website", "invalid", "is invalid");
    if (!errors.empty) throw apiError(422, errors.fullMessage());

    const created = state.oauth.createApplication({
      name,
      website: website === "" ? null : website,
      redirectUris: uris,
      scopes,
    });
    return renderCredentialApplication(state, created);
  });

  app.get("/api/v1/apps/verify_credentials", async (req) => {
    const token = authorize(state, req);
    return renderApplication(state, token.application);
  });
}
