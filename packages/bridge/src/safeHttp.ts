import { lookup as dnsLookupAll } from "node:dns/promises";
import { isIP, type LookupFunction } from "node:net";
import { classifyAddress } from "./addressPolicy.js";
import { TransportError, exchange } from "./httpExchange.js";

// The only way the lookup talks to the network (rules NET-1…NET-6 in docs/identity.md). An acct named by
// anyone makes us fetch from a server named by them, so every request is pinned to an address that was
// checked after DNS resolution, and bounded in redirects, size and time.

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address it has; injectable so tests need no real DNS. */
export type DnsLookup = (hostname: string) => Promise<readonly ResolvedAddress[]>;

export const systemDnsLookup: DnsLookup = (hostname) => dnsLookupAll(hostname, { all: true, verbatim: true });

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
  /** The URL that answered, after redirects. */
  url: string;
}

export interface GetOptions {
  accept: string;
  /** Redirects to another origin are refused (the answer must come from this server). */
  sameOrigin?: boolean;
}

/** A GET with the transport policy applied. Throws `TransportError`. */
export type HttpGet = (url: string, options: GetOptions) => Promise<HttpResponse>;

export interface TransportOptions {
  /**
   * Development and tests: plain HTTP is allowed, but only to loopback addresses (127.0.0.0/8, ::1), and
   * HTTPS may reach any address. Off (production): HTTPS only, public addresses only.
   */
  allowInsecureLoopback?: boolean;
  dnsLookup?: DnsLookup;
  /** Per request, from connecting to the last byte. Default 5 s. */
  timeoutMs?: number;
  /** Largest body read. Default 256 KiB. */
  maxBytes?: number;
  /** Default 3. */
  maxRedirects?: number;
}

export const DEFAULT_TIMEOUT_MS = 5000;
export const DEFAULT_MAX_BYTES = 256 * 1024;
export const DEFAULT_MAX_REDIRECTS = 3;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

const refuse = (why: string) => new TransportError("policy", `refused by the transport policy: ${why}`);

/** NET-1…NET-3: scheme and addresses. Returns the address to connect to. */
async function checkedAddress(url: URL, o: Required<TransportOptions>): Promise<ResolvedAddress> {
  if (url.protocol !== "https:" && url.protocol !== "http:") throw refuse(`${url.protocol} is not HTTP`);
  if (url.protocol === "http:" && !o.allowInsecureLoopback) throw refuse("plain HTTP outside development"); // NET-1
  if (url.username !== "" || url.password !== "") throw refuse("credentials in the URL");
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  let addresses: readonly ResolvedAddress[];
  if (isIP(host) !== 0) {
    addresses = [{ address: host, family: isIP(host) }];
  } else {
    try {
      addresses = await o.dnsLookup(host);
    } catch (e) {
      throw new TransportError("network", `${host} does not resolve (${(e as Error).message})`);
    }
    if (addresses.length === 0) throw new TransportError("network", `${host} has no address`);
  }
  // NET-2, NET-3: every address is checked, not just the first, so a second record cannot smuggle one in.
  for (const { address } of addresses) {
    const kind = classifyAddress(address);
    if (url.protocol === "http:" && kind !== "loopback") {
      throw refuse(`plain HTTP to ${address}, which is not a loopback address`);
    }
    if (!o.allowInsecureLoopback && kind !== "public") throw refuse(`${address} is a ${kind} address`);
  }
  return addresses[0]!;
}

/** Connects to `pinned` whatever the socket layer would resolve, so the checked address is the one used. */
function pinnedLookup(pinned: ResolvedAddress): LookupFunction {
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all === true) callback(null, [{ address: pinned.address, family: pinned.family }]);
    else callback(null, pinned.address, pinned.family);
  }) as LookupFunction;
}

export function createSafeHttpGet(options: TransportOptions = {}): HttpGet {
  const o: Required<TransportOptions> = {
    allowInsecureLoopback: options.allowInsecureLoopback ?? false,
    dnsLookup: options.dnsLookup ?? systemDnsLookup,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    maxBytes: options.maxBytes ?? DEFAULT_MAX_BYTES,
    maxRedirects: options.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
  };
  return async (start, { accept, sameOrigin = false }) => {
    let url = new URL(start);
    const origin = url.origin;
    for (let redirects = 0; ; redirects++) {
      const pinned = await checkedAddress(url, o);
      const res = await exchange(url, {
        method: "GET",
        headers: { accept, "user-agent": "mastodon-mls-bridge/0.1" },
        timeoutMs: o.timeoutMs, // NET-6: one deadline from the first byte sent to the last byte read
        maxBytes: o.maxBytes, // NET-5
        // No keep-alive: a pooled socket could have been opened for another, unchecked address.
        agent: false,
        lookup: pinnedLookup(pinned),
      });
      const location = res.headers.location;
      if (!REDIRECTS.has(res.status) || typeof location !== "string") {
        return { status: res.status, headers: res.headers, body: res.body, url: url.href };
      }
      // NET-4: at most 3 redirects, each checked again like the first request.
      if (redirects >= o.maxRedirects)
        throw new TransportError("redirects", `more than ${o.maxRedirects} redirects`);
      const next = new URL(location, url);
      if (sameOrigin && next.origin !== origin) throw refuse(`a redirect from ${origin} to another server`);
      if (url.protocol === "https:" && next.protocol !== "https:")
        throw refuse("a redirect from HTTPS to HTTP");
      url = next;
    }
  };
}
