import { afterEach, describe, expect, it } from "vitest";
import { classifyAddress } from "./addressPolicy.js";
import { TransportError } from "./httpExchange.js";
import { createSafeHttpGet, type DnsLookup, type HttpGet } from "./safeHttp.js";
import { countingListener, scriptedServer, type Closable } from "./testServers.js";

const open: Closable[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
async function track<T extends Closable>(p: Promise<T>): Promise<T> {
  const s = await p;
  open.push(s);
  return s;
}

const resolvesTo =
  (...addresses: string[]): DnsLookup =>
  () =>
    Promise.resolve(addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })));

async function failure(get: HttpGet, url: string, sameOrigin = false): Promise<string> {
  try {
    await get(url, { accept: "application/json", sameOrigin });
    return "ok";
  } catch (e) {
    if (e instanceof TransportError) return e.failure;
    throw e;
  }
}

describe("address classes (NET-3)", () => {
  it("classifies private, loopback, link-local, CGNAT, unique-local and mapped addresses", () => {
    const table: Array<[string, string]> = [
      ["8.8.8.8", "public"],
      ["2a00:1450:4001::1", "public"],
      ["127.0.0.1", "loopback"],
      ["127.9.9.9", "loopback"],
      ["::1", "loopback"],
      ["10.0.0.1", "private"],
      ["172.16.5.4", "private"],
      ["192.168.1.1", "private"],
      ["100.64.0.1", "private"],
      ["fd00::1", "private"],
      ["169.254.169.254", "link-local"],
      ["fe80::1", "link-local"],
      ["0.0.0.0", "special"],
      ["::", "special"],
      ["224.0.0.1", "special"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:a00:1", "private"],
      ["64:ff9b::a00:1", "special"],
      // IPv4-compatible, deprecated (found by a review: it was public)
      ["::127.0.0.1", "special"],
      ["::a00:1", "special"],
      ["not an address", "special"],
    ];
    for (const [address, kind] of table) expect([address, classifyAddress(address)]).toEqual([address, kind]);
  });
});

describe("transport policy in production mode", () => {
  it("NET-3: refuses a private IP literal before connecting", async () => {
    const get = createSafeHttpGet({ timeoutMs: 60_000 });
    // A connection attempt to 10.0.0.1 would hang for the full minute; a policy refusal comes at once.
    expect(await failure(get, "https://10.0.0.1/.well-known/webfinger")).toBe("policy");
    expect(await failure(get, "https://[fe80::1]/x")).toBe("policy");
  });

  it("NET-3: refuses a name that resolves to a loopback address, and never connects", async () => {
    const listener = await track(countingListener());
    const get = createSafeHttpGet({ dnsLookup: resolvesTo("127.0.0.1") });
    expect(await failure(get, `https://mastodon.a.test:${listener.port}/`)).toBe("policy");
    expect(await failure(get, `https://127.0.0.1:${listener.port}/`)).toBe("policy");
    expect(listener.connections()).toBe(0);
  });

  it("NET-2: checks every address a name resolves to", async () => {
    const get = createSafeHttpGet({ dnsLookup: resolvesTo("93.184.216.34", "192.168.0.10") });
    expect(await failure(get, "https://a.test/")).toBe("policy");
  });

  it("NET-1: refuses plain HTTP", async () => {
    const listener = await track(countingListener());
    expect(await failure(createSafeHttpGet(), `http://127.0.0.1:${listener.port}/`)).toBe("policy");
    expect(await failure(createSafeHttpGet(), "ftp://a.test/")).toBe("policy");
    expect(listener.connections()).toBe(0);
  });
});

describe("transport policy in development mode", () => {
  it("NET-2: connects to the address that was checked, not to what the name would resolve to", async () => {
    const server = await track(scriptedServer((_req, res) => res.end('{"ok":true}')));
    const get = createSafeHttpGet({ allowInsecureLoopback: true, dnsLookup: resolvesTo("127.0.0.1") });
    const res = await get(`http://no-such-host.invalid:${server.port}/x`, { accept: "application/json" });
    expect(new TextDecoder().decode(res.body)).toBe('{"ok":true}');
  });

  it("NET-1: plain HTTP only to loopback", async () => {
    const get = createSafeHttpGet({ allowInsecureLoopback: true, dnsLookup: resolvesTo("10.0.0.1") });
    expect(await failure(get, "http://a.test/")).toBe("policy");
  });

  it("NET-4: follows at most 3 redirects, each checked again; same-origin when asked", async () => {
    const server = await track(
      scriptedServer((req, res, self) => {
        const n = Number(/\/hop\/(\d+)/.exec(req.url ?? "")?.[1] ?? "0");
        if (req.url === "/private") res.writeHead(302, { location: "http://10.0.0.1/" }).end();
        else if (req.url === "/away")
          res.writeHead(302, { location: `http://localhost:${new URL(self).port}/hop/0` }).end();
        else if (n > 0) res.writeHead(307, { location: `/hop/${n - 1}` }).end();
        else res.end("{}");
      }),
    );
    const get = createSafeHttpGet({ allowInsecureLoopback: true });
    expect((await get(`${server.url}/hop/3`, { accept: "*/*" })).url).toBe(`${server.url}/hop/0`);
    expect(await failure(get, `${server.url}/hop/4`)).toBe("redirects");
    expect(await failure(get, `${server.url}/private`)).toBe("policy");
    expect(await failure(get, `${server.url}/away`, true)).toBe("policy");
  });

  it("NET-5: refuses answers over the size cap, declared or streamed", async () => {
    const big = Buffer.alloc(300 * 1024, 0x20);
    const server = await track(
      scriptedServer((req, res) => {
        if (req.url === "/declared") res.writeHead(200, { "content-length": big.byteLength }).end(big);
        else {
          res.writeHead(200); // chunked, no length
          res.write(big.subarray(0, 200 * 1024));
          res.end(big.subarray(200 * 1024));
        }
      }),
    );
    const get = createSafeHttpGet({ allowInsecureLoopback: true });
    expect(await failure(get, `${server.url}/declared`)).toBe("too-large");
    expect(await failure(get, `${server.url}/streamed`)).toBe("too-large");
  });

  it("NET-6: gives up when no complete answer comes in time", async () => {
    let held = 0;
    const server = await track(
      scriptedServer((_req, res) => {
        held++;
        res.writeHead(200).write("{"); // and never ends
      }),
    );
    const get = createSafeHttpGet({ allowInsecureLoopback: true, timeoutMs: 200 });
    expect(await failure(get, `${server.url}/`)).toBe("timeout");
    expect(held).toBe(1);
  });
});
