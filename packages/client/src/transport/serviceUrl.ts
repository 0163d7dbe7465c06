import { ClientError } from "../errors.js";

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * DESIGN §3: HTTPS only, plain HTTP only for loopback in development. Hub URLs arrive from other people
 * (invitations), so this runs on every URL before the client sends a signed request to it. Returns the
 * URL without a trailing slash, as the base all paths are appended to.
 */
export function checkServiceUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ClientError("invalid_service_url", `not a URL: ${url}`);
  }
  const ok = parsed.protocol === "https:" || (parsed.protocol === "http:" && LOOPBACK.has(parsed.hostname));
  if (!ok)
    throw new ClientError("invalid_service_url", `services must use https (or http on loopback): ${url}`);
  if (parsed.username !== "" || parsed.password !== "" || parsed.search !== "" || parsed.hash !== "") {
    throw new ClientError(
      "invalid_service_url",
      `a service URL carries no credentials, query or fragment: ${url}`,
    );
  }
  return parsed.href.replace(/\/+$/, "");
}
