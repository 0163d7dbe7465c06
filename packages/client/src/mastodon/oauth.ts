import { createHash, randomBytes } from "node:crypto";
import { formatAcct, parseAcct } from "@mastodon-mls/protocol";

// The few Mastodon calls the CLI makes itself (notes/mastodon-api-facts.md): register an application,
// the authorization-code flow with the out-of-band redirect (the user pastes the code), and finding out
// who the token belongs to — `username` from verify_credentials and the instance's LOCAL_DOMAIN from
// /api/v2/instance (it may differ from the host serving the API).

export const OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob";
/** verify_credentials (for the directory, which checks the token) and, later, profile fields (proofs). */
export const CLIENT_SCOPES = "read:accounts write:accounts";

const TIMEOUT_MS = 30_000;
/** Mastodon's answers to these calls are a few KiB; a larger one is not read (an instance is not trusted). */
const MAX_ANSWER_BYTES = 1024 * 1024;
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** A Mastodon instance could not be reached (`unreachable`) or said no (`refused`). */
export class MastodonError extends Error {
  constructor(
    readonly kind: "unreachable" | "refused",
    readonly url: string,
    detail: string,
    readonly status?: number,
  ) {
    super(
      kind === "unreachable"
        ? `could not reach the Mastodon instance at ${url}: ${detail}`
        : `the Mastodon instance at ${url} refused: ${detail}`,
    );
    this.name = "MastodonError";
  }
}

/**
 * The API origin for what a user typed: `mastodon.example` → `https://mastodon.example`. Plain HTTP only
 * for loopback (development).
 */
export function instanceOrigin(input: string): string {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(input) ? input : `https://${input}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new MastodonError("refused", input, "not an instance name or URL");
  }
  if (!(url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.has(url.hostname)))) {
    throw new MastodonError("refused", input, "instances are reached over https (http only on loopback)");
  }
  return url.origin;
}

async function call(
  origin: string,
  path: string,
  init: { method?: string; token?: string; form?: Record<string, string> } = {},
): Promise<unknown> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  let body: string | undefined;
  if (init.form !== undefined) {
    headers["content-type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(init.form).toString();
  }
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${origin}${path}`, {
      method: init.method ?? "GET",
      headers,
      body,
      signal: AbortSignal.timeout(TIMEOUT_MS),
      redirect: "error",
    });
    text = await boundedText(res, MAX_ANSWER_BYTES);
  } catch (e) {
    if (e instanceof MastodonError) throw e;
    const cause = e instanceof Error && e.cause instanceof Error ? ` (${e.cause.message})` : "";
    throw new MastodonError("unreachable", origin, `${e instanceof Error ? e.message : String(e)}${cause}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text) as unknown;
  } catch {
    // A proxy's HTML page: the instance as such did not answer (notes/mastodon-api-facts.md).
    throw new MastodonError(
      "unreachable",
      origin,
      `HTTP ${res.status} that is not Mastodon's JSON`,
      res.status,
    );
  }
  if (!res.ok) {
    const what = [field(json, "error"), field(json, "error_description")]
      .filter((x) => typeof x === "string")
      .join(": ");
    const detail = `${init.method ?? "GET"} ${path} answered ${res.status}${what === "" ? "" : ` (${what})`}`;
    throw new MastodonError(res.status >= 500 ? "unreachable" : "refused", origin, detail, res.status);
  }
  return json;
}

/** The body as text, refusing one larger than `max` bytes without reading it all. */
async function boundedText(res: Response, max: number): Promise<string> {
  if (Number(res.headers.get("content-length") ?? "0") > max) {
    await res.body?.cancel();
    throw new MastodonError("unreachable", new URL(res.url).origin, `an answer larger than ${max} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body?.getReader();
  for (;;) {
    const next = await reader?.read();
    if (next === undefined || next.done) break;
    size += next.value.byteLength;
    if (size > max) {
      await reader!.cancel().catch(() => undefined);
      throw new MastodonError("unreachable", new URL(res.url).origin, `an answer larger than ${max} bytes`);
    }
    chunks.push(next.value);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** A field of a JSON answer, whatever the answer's shape (null, an array, a number…). */
function field(json: unknown, key: string): unknown {
  return typeof json === "object" && json !== null && !Array.isArray(json)
    ? (json as Record<string, unknown>)[key]
    : undefined;
}

function str(v: unknown, origin: string, what: string): string {
  if (typeof v !== "string" || v === "")
    throw new MastodonError("unreachable", origin, `the answer lacks ${what}`);
  return v;
}

export interface RegisteredApp {
  clientId: string;
  clientSecret: string;
}

/** POST /api/v1/apps with the out-of-band redirect URI. */
export async function registerApp(origin: string, clientName = "mls-dm"): Promise<RegisteredApp> {
  const json = await call(origin, "/api/v1/apps", {
    method: "POST",
    form: { client_name: clientName, redirect_uris: OOB_REDIRECT_URI, scopes: CLIENT_SCOPES },
  });
  return {
    clientId: str(field(json, "client_id"), origin, "client_id"),
    clientSecret: str(field(json, "client_secret"), origin, "client_secret"),
  };
}

/** PKCE (S256): the verifier stays here, the challenge goes into the authorize URL. */
export function newPkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** Where the user approves the application; Mastodon then shows the code to paste. */
export function authorizeUrl(origin: string, app: RegisteredApp, codeChallenge: string): string {
  const url = new URL("/oauth/authorize", origin);
  url.search = new URLSearchParams({
    client_id: app.clientId,
    redirect_uri: OOB_REDIRECT_URI,
    response_type: "code",
    scope: CLIENT_SCOPES,
    code_challenge: codeChallenge,
    code_challenge_method: "S256",
  }).toString();
  return url.toString();
}

/** POST /oauth/token (authorization_code) → the access token. */
export async function exchangeCode(
  origin: string,
  app: RegisteredApp,
  code: string,
  codeVerifier: string,
): Promise<string> {
  const json = await call(origin, "/oauth/token", {
    method: "POST",
    form: {
      grant_type: "authorization_code",
      code: code.trim(),
      client_id: app.clientId,
      client_secret: app.clientSecret,
      redirect_uri: OOB_REDIRECT_URI,
      code_verifier: codeVerifier,
      scope: CLIENT_SCOPES,
    },
  });
  return str(field(json, "access_token"), origin, "access_token");
}

/** `user@LOCAL_DOMAIN` of the token's account. */
export async function accountOfToken(
  origin: string,
  token: string,
): Promise<{ acct: string; domain: string }> {
  const me = await call(origin, "/api/v1/accounts/verify_credentials", { token });
  const instance = await call(origin, "/api/v2/instance");
  const username = str(field(me, "username"), origin, "username").toLowerCase();
  const domain = str(field(instance, "domain"), origin, "the instance's domain").toLowerCase();
  // Both come from the instance: only a well-formed account name is kept (and later named in proofs).
  let acct: string;
  try {
    acct = formatAcct(parseAcct(`${username}@${domain}`));
  } catch {
    throw new MastodonError("unreachable", origin, "the answer names no valid account (username@domain)");
  }
  return { acct, domain: parseAcct(acct).domain };
}
