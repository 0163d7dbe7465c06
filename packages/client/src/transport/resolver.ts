import { WellKnownServices } from "@mastodon-mls/protocol";
import { ClientError } from "../errors.js";
import { ServiceHttp } from "./http.js";
import { checkServiceUrl } from "./serviceUrl.js";

export interface ServiceUrls {
  directory: string;
  delivery: string;
}

/** Where an instance's directory and delivery service live (DESIGN §4). */
export interface ServiceResolver {
  resolve(domain: string): Promise<ServiceUrls>;
}

/** The default: `GET https://<domain>/.well-known/mls-services`, remembered for the life of the resolver. */
export class WellKnownResolver implements ServiceResolver {
  private readonly cache = new Map<string, Promise<ServiceUrls>>();

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
    const http = new ServiceHttp(`service discovery of ${domain}`, checkServiceUrl(`https://${domain}`));
    const found = await http.request({
      method: "GET",
      path: "/.well-known/mls-services",
      auth: { kind: "none" },
      response: WellKnownServices,
    });
    return { directory: checkServiceUrl(found.directory), delivery: checkServiceUrl(found.delivery) };
  }
}

/** A fixed map, for tests and development (test domains such as "a.test" do not resolve). */
export class StaticResolver implements ServiceResolver {
  private readonly map: Map<string, ServiceUrls>;

  constructor(map: Record<string, ServiceUrls>) {
    this.map = new Map(
      Object.entries(map).map(([d, s]) => [
        d.toLowerCase(),
        { directory: checkServiceUrl(s.directory), delivery: checkServiceUrl(s.delivery) },
      ]),
    );
  }

  resolve(domain: string): Promise<ServiceUrls> {
    const found = this.map.get(domain.toLowerCase());
    if (found === undefined) {
      return Promise.reject(new ClientError("invalid_service_url", `no services configured for ${domain}`));
    }
    return Promise.resolve(found);
  }
}
