import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { DnsLookup } from "@mastodon-mls/bridge";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { CliResolver, parseServicesMap } from "../cli/services.js";
import { ServiceUnavailableError } from "../errors.js";
import { ServiceHttp } from "./http.js";
import { AddressRefusedError, publicOnlyLookup, reachFor } from "./publicReach.js";
import { StaticResolver, WellKnownResolver } from "./resolver.js";

// NET-7: a service URL another party named (a /.well-known/mls-services answer, an invitation's hub) is
// reached in production only at public addresses. checkRemoteServiceUrl refuses IP literals up front;
// a DNS name that resolves to this machine or its network must be refused when it is resolved, before
// anything is sent (found by an audit: only literals were checked).

const names: Record<string, { address: string; family: number }[]> = {
  "public.example": [{ address: "93.184.216.34", family: 4 }],
  "dual.example": [
    { address: "2606:2800:220:1:248:1893:25c8:1946", family: 6 },
    { address: "93.184.216.34", family: 4 },
  ],
  "loopback.example": [{ address: "127.0.0.1", family: 4 }],
  "metadata.example": [{ address: "169.254.169.254", family: 4 }],
  // A public record first and a private one after: the socket would try the second when the first fails.
  "smuggled.example": [
    { address: "93.184.216.34", family: 4 },
    { address: "10.0.0.7", family: 4 },
  ],
  "empty.example": [],
};
const fakeDns: DnsLookup = async (host) => {
  const found = names[host];
  if (found === undefined) throw new Error(`getaddrinfo ENOTFOUND ${host}`);
  return found;
};

function lookupOnce(host: string, options: { all?: boolean; family?: number }) {
  return new Promise<{ err: Error | null; address?: unknown; family?: number }>((resolve) =>
    publicOnlyLookup(fakeDns)(host, options, (err, address, family) => resolve({ err, address, family })),
  );
}

describe("publicOnlyLookup", () => {
  it("answers with the public addresses a name has, as the socket asks (one, all, one family)", async () => {
    expect(await lookupOnce("public.example", {})).toEqual({
      err: null,
      address: "93.184.216.34",
      family: 4,
    });
    expect((await lookupOnce("dual.example", { all: true })).address).toEqual(names["dual.example"]);
    expect(await lookupOnce("dual.example", { family: 4 })).toMatchObject({ address: "93.184.216.34" });
  });

  it("refuses a name with any loopback, link-local or private address, and one that does not resolve", async () => {
    for (const [host, address] of [
      ["loopback.example", "127.0.0.1"],
      ["metadata.example", "169.254.169.254"],
      ["smuggled.example", "10.0.0.7"],
    ] as const) {
      const { err } = await lookupOnce(host, { all: true });
      expect(err, host).toBeInstanceOf(AddressRefusedError);
      expect(err!.message).toContain(`resolves to ${address}`);
    }
    expect((await lookupOnce("empty.example", {})).err?.message).toMatch(/has no address/);
    expect((await lookupOnce("nowhere.example", {})).err?.message).toMatch(/ENOTFOUND/);
  });
});

describe("ServiceHttp reaching a service another party named", () => {
  let server: Server;
  let port: number;
  let connections = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
    server.on("connection", () => connections++);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const get = (http: ServiceHttp) =>
    http.request({ method: "GET", path: "/x", auth: { kind: "none" }, response: z.object({}) });

  it("does not connect when the name resolves to this machine, nor to a loopback IP literal", async () => {
    const before = connections;
    for (const [url, why] of [
      [`http://loopback.example:${port}`, /loopback\.example resolves to 127\.0\.0\.1, a loopback address/],
      [`http://127.0.0.1:${port}`, /127\.0\.0\.1 is a loopback address/],
    ] as const) {
      const err = await get(new ServiceHttp("delivery service", url, { publicOnly: fakeDns })).catch(
        (e: unknown) => e,
      );
      expect(err, url).toBeInstanceOf(ServiceUnavailableError);
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toContain(url);
    }
    expect(connections).toBe(before);
    // The same server, reached at any address (a URL the person configured): it answers.
    await expect(get(new ServiceHttp("delivery service", `http://127.0.0.1:${port}`))).resolves.toEqual({});
    expect(connections).toBe(before + 1);
  });

  it("a connection kept alive for a URL reached at any address is never reused for one another party named", async () => {
    // Pools are keyed by host and port only: the same origin reached both ways must not share a socket,
    // or the second request would go out on a connection its lookup never checked.
    const url = `http://localhost:${port}`;
    const before = connections;
    await expect(get(new ServiceHttp("delivery service", url))).resolves.toEqual({});
    expect(connections).toBe(before + 1);
    const err = await get(
      new ServiceHttp("delivery service", url, {
        publicOnly: async () => [{ address: "127.0.0.1", family: 4 }],
      }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect((err as Error).message).toMatch(/localhost resolves to 127\.0\.0\.1, a loopback address/);
    expect(connections).toBe(before + 1);
  });

  it("WellKnownResolver: the discovery request to a named acct's domain is checked too (a name, a literal)", async () => {
    const asked: string[] = [];
    const resolver = new WellKnownResolver({
      dnsLookup: async (host) => {
        asked.push(host);
        return [{ address: "127.0.0.1", family: 4 }];
      },
    });
    for (const [domain, why] of [
      ["evil.example", /evil\.example resolves to 127\.0\.0\.1, a loopback address/],
      ["127.0.0.1", /127\.0\.0\.1 is a loopback address/],
    ] as const) {
      const err = await resolver.resolve(domain).catch((e: unknown) => e);
      expect(err, domain).toBeInstanceOf(ServiceUnavailableError);
      expect((err as Error).message, domain).toMatch(why);
    }
    expect(asked).toEqual(["evil.example"]);
  });

  it("reachFor: development maps and URLs the person configured reach anywhere; others public only", () => {
    const dev = new StaticResolver({
      "a.test": { directory: "http://127.0.0.1:1", delivery: "http://127.0.0.1:2" },
    });
    expect(reachFor(dev, "https://hub.example")).toBe("any");
    const production = {
      resolve: () => Promise.reject(new Error("unused")),
      configured: (url: string) => url === "https://dm.home.example",
      dnsLookup: fakeDns,
    };
    expect(reachFor(production, "https://dm.home.example")).toBe("any");
    expect(reachFor(production, "https://hub.example")).toEqual({ publicOnly: fakeDns });
    // The CLI's --services-map without development Mastodons: production, but the map is the person's.
    const cli = new CliResolver(
      parseServicesMap(
        '{"home.example": {"directory": "https://10.0.0.2/", "delivery": "https://10.0.0.3"}}',
      ),
    );
    expect(reachFor(cli, "https://10.0.0.2")).toBe("any");
    expect(reachFor(cli, "https://10.0.0.3")).toBe("any");
    expect(reachFor(cli, "https://hub.example")).toMatchObject({ publicOnly: expect.any(Function) });
  });
});
