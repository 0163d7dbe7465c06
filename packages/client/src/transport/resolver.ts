import { systemDnsLookup, type DnsLookup } from "@mastodon-mls/bridge";
import { WellKnownServices } from "@mastodon-mls/protocol";
import { ClientError } from "../errors.js";
import { ServiceHttp } from "./http.js";
import { checkRemoteServiceUrl, checkServiceUrl } from "./serviceUrl.js";

export interface ServiceUrls {
  directory: string;
  delivery: string;
}

/** Where an instance's directory and delivery service live (DESIGN §4). */
export interface ServiceResolver {
  resolve(domain: string): Promise<ServiceUrls>;
  /**
   * Development: where a domain's Mastodon answers WebFinger and its API, when that is not
   * https://<domain> (test domains such as "a.test" do not resolve). Undefined: the default.
   */
  mastodonOrigin?(domain: string): string | undefined;
  /**
   * Development: account lookups may use plain HTTP to loopback addresses (NET-1 of docs/identity.md).
   * Only resolvers built from a development map say so.
   */
  readonly insecureLoopback?: boolean;
  /**
   * Whether the person running the device named this service URL (a services map): it is reached
   * wherever it is. Any other URL, named by an instance or by whoever sent an invitation, is reached only
   * at public addresses in production (NET-7 of docs/identity.md).
   */
  configured?(url: string): boolean;
  /** How host names resolve for that check. Default: the system's resolver. Tests inject their own. */
  readonly dnsLookup?: DnsLookup;
}

/** A domain's services, and in development where its Mastodon is. */
export interface DevServiceUrls extends ServiceUrls {
  mastodon?: string;
}

/** The default: `GET https://<domain>/.well-known/mls-services`, remembered for the life of the resolver. */
export class WellKnownResolver implements ServiceResolver {
  private readonly cache = new Map<string, Promise<ServiceUrls>>();
  readonly dnsLookup: DnsLookup;

  constructor(opts: { dnsLookup?: DnsLookup } = {}) {
    this.dnsLookup = opts.dnsLookup ?? systemDnsLookup;
  }

  resolve(domain: string): Promise<ServiceUrls> {
    let hit = this.cache.get(domain);
    if (hit === undefined) {
      hit = this.lookup(domain);
      this.cache.set(domain, hit);
      // A failure is not remembered: the next call tries again.
      hit.catch(() => this.cache.delete(domain));
    }
    return hit;
  }

  private async lookup(domain: string): Promise<ServiceUrls> {
    // The domain is whoever's acct was named: reached at public addresses only, like what it answers.
    const http = new ServiceHttp(`service discovery of ${domain}`, checkServiceUrl(`https://${domain}`), {
      publicOnly: this.dnsLookup,
    });
    const found = await http.request({
      method: "GET",
      path: "/.well-known/mls-services",
      auth: { kind: "none" },
      response: WellKnownServices,
    });
    // Named by the instance: never this machine or a private network (a development set-up uses a map).
    return {
      directory: checkRemoteServiceUrl(found.directory, false),
      delivery: checkRemoteServiceUrl(found.delivery, false),
    };
  }
}

/** A fixed map, for tests and development (test domains such as "a.test" do not resolve). */
export class StaticResolver implements ServiceResolver {
  private readonly map: Map<string, ServiceUrls>;
  private readonly mastodon: Map<string, string>;
  /** A static map is a development set-up: lookups may reach loopback Mastodons over plain HTTP. */
  readonly insecureLoopback = true;

  constructor(map: Record<string, DevServiceUrls>) {
    this.map = new Map(
      Object.entries(map).map(([d, s]) => [
        d.toLowerCase(),
        { directory: checkServiceUrl(s.directory), delivery: checkServiceUrl(s.delivery) },
      ]),
    );
    this.mastodon = new Map(
      Object.entries(map).flatMap(([d, s]) =>
        s.mastodon === undefined ? [] : [[d.toLowerCase(), checkServiceUrl(s.mastodon)] as const],
      ),
    );
  }

  mastodonOrigin(domain: string): string | undefined {
    return this.mastodon.get(domain.toLowerCase());
  }

  resolve(domain: string): Promise<ServiceUrls> {
    const found = this.map.get(domain.toLowerCase());
    if (found === undefined) {
      return Promise.reject(new ClientError("invalid_service_url", `no services configured for ${domain}`));
    }
    return Promise.resolve(found);
  }
}
