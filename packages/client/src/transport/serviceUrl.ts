import { isIP } from "node:net";
import { classifyAddress } from "@mastodon-mls/bridge";
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

/**
 * A service URL another party named (an instance's `/.well-known/mls-services`, the hub of an invitation):
 * as `checkServiceUrl`, and, unless this device runs against development services (`allowLoopback`, the
 * resolver's `insecureLoopback`), HTTPS to a host that is neither this machine (`localhost`) nor an address
 * of a loopback, private, link-local or special network (NET-3 and NET-7 of docs/identity.md, for IP
 * literals; a DNS name is checked when it is resolved to connect: publicReach.ts). Otherwise a stranger
 * could make the device send its requests to services on its own machine or network.
 */
export function checkRemoteServiceUrl(url: string, allowLoopback: boolean): string {
  const base = checkServiceUrl(url);
  if (allowLoopback) return base;
  const parsed = new URL(base);
  // "localhost." is localhost too: trailing dots go before the checks.
  const host = parsed.hostname
    .replace(/^\[(.*)\]$/, "$1")
    .replace(/\.+$/, "")
    .toLowerCase();
  const local = host === "localhost" || host.endsWith(".localhost");
  if (parsed.protocol !== "https:" || local || (isIP(host) !== 0 && classifyAddress(host) !== "public")) {
    throw new ClientError(
      "invalid_service_url",
      `a service named by another instance or person must be reached over https at a public address: ${url}`,
    );
  }
  return base;
}
