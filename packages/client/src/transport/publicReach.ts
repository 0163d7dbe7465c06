import type { LookupAddress } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { classifyAddress, systemDnsLookup, type DnsLookup } from "@mastodon-mls/bridge";
import type { ServiceResolver } from "./resolver.js";

// NET-7 (docs/identity.md): a service URL that another instance or person named (an instance's
// /.well-known/mls-services, the hub of an invitation) is reached, in production, only at public
// addresses, checked after DNS resolution and at the moment of connecting. checkRemoteServiceUrl refuses
// IP literals and `localhost` up front; a DNS name is only known once it resolves, and a name can resolve
// differently each time, so the check sits in the socket's own lookup: the address checked is the one
// connected to.

/**
 * Where a service may be reached: at any address (the device's own home services, a URL the person running
 * the device configured, development), or only at public ones, with the names resolved by `publicOnly`.
 */
export type Reach = "any" | { publicOnly: DnsLookup };

/** The name resolved to an address a stranger must not make this device connect to. */
export class AddressRefusedError extends Error {
  constructor(
    readonly host: string,
    readonly address: string,
    readonly kind: string,
  ) {
    super(
      `${host === address ? `${host} is` : `${host} resolves to ${address},`} a ${kind} address: a ` +
        "service named by another instance or person must be at a public address",
    );
    this.name = "AddressRefusedError";
  }
}

/**
 * How `url` (checked) may be reached when the device got it from `resolver` or from someone else; `ownHome`,
 * the device's own home delivery service (checked), is reached wherever it is, whoever names it.
 */
export function reachFor(resolver: ServiceResolver, url: string, ownHome?: string): Reach {
  if (url === ownHome || resolver.insecureLoopback === true || resolver.configured?.(url) === true) {
    return "any";
  }
  return { publicOnly: resolver.dnsLookup ?? systemDnsLookup };
}

/**
 * The refusal for an IP literal host that is not public, or undefined. Node connects to a literal
 * without asking the lookup, so literals are checked before the request.
 */
export function refusedLiteral(url: URL): AddressRefusedError | undefined {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (isIP(host) === 0) return undefined;
  const kind = classifyAddress(host);
  return kind === "public" ? undefined : new AddressRefusedError(host, host, kind);
}

/**
 * A socket lookup that resolves with `dnsLookup` and fails unless every address is public (one private
 * record among public ones would otherwise be tried when the others do not answer).
 */
export function publicOnlyLookup(dnsLookup: DnsLookup): LookupFunction {
  return (hostname: string, options: { all?: boolean; family?: number | string }, callback) => {
    const answer = callback as (
      err: Error | null,
      address?: string | LookupAddress[],
      family?: number,
    ) => void;
    dnsLookup(hostname).then(
      (found) => {
        if (found.length === 0) return answer(new Error(`${hostname} has no address`));
        for (const { address } of found) {
          const kind = classifyAddress(address);
          if (kind !== "public") return answer(new AddressRefusedError(hostname, address, kind));
        }
        const wanted =
          options.family === 6 || options.family === "IPv6"
            ? 6
            : options.family === 4 || options.family === "IPv4"
              ? 4
              : 0;
        const usable = wanted === 0 ? found : found.filter((a) => a.family === wanted);
        if (usable.length === 0) return answer(new Error(`${hostname} has no IPv${wanted} address`));
        if (options.all === true)
          return answer(
            null,
            usable.map((a) => ({ address: a.address, family: a.family })),
          );
        return answer(null, usable[0]!.address, usable[0]!.family);
      },
      (e: unknown) => answer(e instanceof Error ? e : new Error(String(e))),
    );
  };
}
