import { readFileSync } from "node:fs";
import { z } from "zod";
import { ServiceHttp } from "../transport/http.js";
import {
  WellKnownResolver,
  type DevServiceUrls,
  type ServiceResolver,
  type ServiceUrls,
} from "../transport/resolver.js";
import { checkServiceUrl } from "../transport/serviceUrl.js";
import { WellKnownServices } from "@mastodon-mls/protocol";
import { UsageError } from "./io.js";

// Where each instance's directory and delivery service are: a map (development: `--services-map`, saved
// at login) first, then https://<domain>/.well-known/mls-services (DESIGN §4).

export type ServicesMap = Record<string, DevServiceUrls>;

const ServicesMapSchema = z.record(
  z.string(),
  z.object({ directory: z.string(), delivery: z.string(), mastodon: z.string().optional() }),
);

/** `--services-map`: JSON text, or `@file` holding it. */
export function parseServicesMap(text: string): ServicesMap {
  let raw = text;
  if (text.startsWith("@")) {
    try {
      raw = readFileSync(text.slice(1), "utf8");
    } catch (e) {
      throw new UsageError(
        `--services-map: cannot read ${text.slice(1)}: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new UsageError(
      '--services-map: not JSON; expected {"domain": {"directory": URL, "delivery": URL}, …}',
    );
  }
  const parsed = ServicesMapSchema.safeParse(json);
  if (!parsed.success) {
    throw new UsageError('--services-map: expected {"domain": {"directory": URL, "delivery": URL}, …}');
  }
  return Object.fromEntries(
    Object.entries(parsed.data).map(([d, s]) => [
      d.toLowerCase(),
      {
        directory: checkServiceUrl(s.directory),
        delivery: checkServiceUrl(s.delivery),
        ...(s.mastodon === undefined ? {} : { mastodon: checkServiceUrl(s.mastodon) }),
      },
    ]),
  );
}

export class CliResolver implements ServiceResolver {
  private readonly wellKnown = new WellKnownResolver();
  /** A development map naming Mastodons: account lookups may then use plain HTTP to loopback (NET-1). */
  readonly insecureLoopback: boolean;

  constructor(private readonly map: ServicesMap) {
    this.insecureLoopback = Object.values(map).some((s) => s.mastodon !== undefined);
  }

  /** The map is the person's own word: its services are reached wherever they are (NET-7). */
  configured(url: string): boolean {
    return Object.values(this.map).some((s) => s.directory === url || s.delivery === url);
  }

  mastodonOrigin(domain: string): string | undefined {
    return this.map[domain.toLowerCase()]?.mastodon;
  }

  resolve(domain: string): Promise<ServiceUrls> {
    const hit = this.map[domain.toLowerCase()];
    return hit !== undefined
      ? Promise.resolve({ directory: hit.directory, delivery: hit.delivery })
      : this.wellKnown.resolve(domain);
  }
}

/** Asks each service for its /.well-known/mls-services: catches a wrong or unreachable URL before anything is set up. */
export async function checkServices(services: ServiceUrls): Promise<ServiceUrls> {
  const checked = {
    directory: checkServiceUrl(services.directory),
    delivery: checkServiceUrl(services.delivery),
  };
  for (const [name, url] of [
    ["directory", checked.directory],
    ["delivery service", checked.delivery],
  ] as const) {
    await new ServiceHttp(name, url).request({
      method: "GET",
      path: "/.well-known/mls-services",
      auth: { kind: "none" },
      response: WellKnownServices,
    });
  }
  return checked;
}
