import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import type { DnsLookup } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { describe, expect, it } from "vitest";
import { MAX_IDLE_HUBS, INVITED_HUB_SECONDS, type DeviceContext } from "./context.js";
import { MlsDmClient } from "./client.js";
import { DeviceStore } from "./store/deviceStore.js";
import { FAST_RETRY, newClient, useOneInstance, type Instance } from "./testSupport/instances.js";
import { DeliveryClient } from "./transport/deliveryClient.js";
import type { ServiceResolver, StaticResolver } from "./transport/resolver.js";

// Review item C6: anyone can send an invitation naming any hub, and every hub a device heard of is polled
// on each sync. Hubs hosting none of the device's groups are polled for a while only, and only the most
// recently named ones.

const env = useOneInstance();

const LOOPBACK = { address: "127.0.0.1", family: 4 };

/** A port on this machine that counts who connects, and hangs up on them: where a hostile name points. */
async function connectionTrap(): Promise<{
  port: number;
  connections: () => number;
  close: () => Promise<void>;
}> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * The instance's devices run as in production: their own services are the ones the person configured, and
 * host names resolve as `dnsLookup` (a DNS server under someone else's control) answers.
 */
function asInProduction(a: Instance, resolver: StaticResolver, dnsLookup: DnsLookup): ServiceResolver {
  return {
    resolve: (d) => resolver.resolve(d),
    configured: (url) => url === a.urls.delivery || url === a.urls.directory,
    dnsLookup,
  };
}

describe("hubs named by invitations", () => {
  it(
    `are polled at most ${MAX_IDLE_HUBS} at a time, and forgotten when no group came of them in time`,
    { timeout: 60_000 },
    async () => {
      const { a, resolver } = env;
      const alice = await newClient(a, "alice", resolver);
      const mallory = await newClient(a, "mallory", resolver);
      const device = await (await DeviceStore.open(mallory.dir)).readDevice();
      const asMallory = new DeliveryClient(a.urls.delivery, {
        certificate: fromBase64url(device.certificate),
        signKey: fromBase64url(device.deviceKey.signKey),
      });
      // 40 invitations, each naming another hub where nothing listens.
      for (let port = 1; port <= 40; port++) {
        await asMallory.invite(
          "alice@a.test",
          `http://127.0.0.1:${port}`,
          toBase64url(new Uint8Array(randomBytes(16))),
        );
      }
      const polled = (events: Awaited<ReturnType<MlsDmClient["sync"]>>) =>
        events.filter((e) => e.type === "error" && e.operation.startsWith("sync http://127.0.0.1:")).length;
      expect((await alice.sync()).filter((e) => e.type === "invitation")).toHaveLength(40);
      expect(polled(await alice.sync())).toBe(MAX_IDLE_HUBS);

      // Two weeks later (the device's clock), none of them is polled any more; its own hub still is.
      let now = Date.now() + (INVITED_HUB_SECONDS + 60) * 1000;
      const later = await MlsDmClient.open(alice.dir, {
        services: resolver,
        retry: FAST_RETRY,
        clock: () => now,
      });
      expect(polled(await later.sync())).toBe(0);
      const { groupId } = await mallory.createGroup(["@alice@a.test"]);
      now = Date.now() + (INVITED_HUB_SECONDS + 120) * 1000;
      expect((await later.sync()).some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
    },
  );

  it("NET-7: in production, a hub whose name resolves to this machine is never connected to", async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice2", resolver);
    const mallory = await newClient(a, "mallory2", resolver);
    // Where the hub's name points: a port on this machine that counts who connects.
    const trap = await connectionTrap();
    const hub = `https://hub.evil.example:${trap.port}`;
    try {
      const device = await (await DeviceStore.open(mallory.dir)).readDevice();
      await new DeliveryClient(a.urls.delivery, {
        certificate: fromBase64url(device.certificate),
        signKey: fromBase64url(device.deviceKey.signKey),
      }).invite("alice2@a.test", hub, toBase64url(new Uint8Array(randomBytes(16))));
      // The same device, run as in production.
      const opened = await MlsDmClient.open(alice.dir, {
        services: asInProduction(a, resolver, async (host) =>
          host === "hub.evil.example" ? [LOOPBACK] : [],
        ),
        retry: FAST_RETRY,
        identity: { allowInsecureLoopback: true },
      });
      const events = await opened.sync();
      expect(
        events.filter((e) => e.type === "invitation").map((e) => e.type === "invitation" && e.hub),
      ).toEqual([hub]);
      const refused = events.filter((e) => e.type === "error" && e.operation === `sync ${hub}`);
      expect(refused).toHaveLength(1);
      expect(refused[0]!.type === "error" && refused[0].message).toMatch(
        /hub\.evil\.example resolves to 127\.0\.0\.1, a loopback address/,
      );
      // The next sync asks again (names change) and is refused again; nothing ever reached the port.
      expect((await opened.sync()).some((e) => e.type === "error" && e.operation === `sync ${hub}`)).toBe(
        true,
      );
      expect(trap.connections()).toBe(0);
    } finally {
      await trap.close();
    }
  });

  it("NET-7: in production, the live stream connects neither to a hub whose name resolves to this machine nor to one at a loopback IP literal remembered earlier", async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice3", resolver);
    const trap = await connectionTrap();
    const port = trap.port;
    const named = `https://hub.evil.example:${port}`;
    // Remembered before literals were refused on arrival (an earlier version, or a run on a development map).
    const literal = `http://127.0.0.1:${port}`;
    const controller = new AbortController();
    try {
      const ctx = (alice as unknown as { ctx: DeviceContext }).ctx;
      await ctx.rememberHub(named);
      await ctx.rememberHub(literal);
      const asked: string[] = [];
      const opened = await MlsDmClient.open(alice.dir, {
        services: asInProduction(a, resolver, async (host) => {
          asked.push(host);
          return host === "hub.evil.example" ? [LOOPBACK] : [];
        }),
        retry: FAST_RETRY,
        identity: { allowInsecureLoopback: true },
      });
      // Each stream fails three times, then its hub is polled (over HTTP, refused too): an error event each.
      const polled = new Map<string, string>();
      for await (const e of opened.events({
        signal: controller.signal,
        fallbackAfterFailures: 3,
        pollIntervalMs: 50,
      })) {
        if (e.type === "error" && e.operation.startsWith("poll "))
          polled.set(e.operation.slice(5), e.message);
        if (polled.has(named) && polled.has(literal)) controller.abort();
      }
      expect(polled.get(named)).toMatch(/hub\.evil\.example resolves to 127\.0\.0\.1, a loopback address/);
      expect(polled.get(literal)).toMatch(/127\.0\.0\.1 is a loopback address/);
      // The streams asked the checking lookup (not the system's resolver) for the name.
      expect(asked).toContain("hub.evil.example");
      expect(trap.connections()).toBe(0);
    } finally {
      controller.abort();
      await trap.close();
    }
  });

  it("NET-7: in production, another instance's directory and home at a name resolving to this machine are never connected to", async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice4", resolver);
    const trap = await connectionTrap();
    const port = trap.port;
    try {
      // evil.example's /.well-known/mls-services answer (as its resolver gives it): names, not literals.
      const production: ServiceResolver = {
        ...asInProduction(a, resolver, async (host) => (host.endsWith(".evil.example") ? [LOOPBACK] : [])),
        resolve: (d) =>
          d === "evil.example"
            ? Promise.resolve({
                directory: `https://dir.evil.example:${port}`,
                delivery: `https://dm.evil.example:${port}`,
              })
            : resolver.resolve(d),
      };
      const opened = await MlsDmClient.open(alice.dir, { services: production, retry: FAST_RETRY });
      const ctx = (opened as unknown as { ctx: DeviceContext }).ctx;
      const directory = await ctx.directoryOf("evil.example");
      await expect(directory.accountDevices("bob@evil.example")).rejects.toThrow(
        /dir\.evil\.example resolves to 127\.0\.0\.1, a loopback address/,
      );
      const home = await ctx.homeDeliveryOf("bob@evil.example");
      await expect(
        home.invite("bob@evil.example", a.urls.delivery, "AAAAAAAAAAAAAAAAAAAAAA"),
      ).rejects.toThrow(/dm\.evil\.example resolves to 127\.0\.0\.1, a loopback address/);
      expect(trap.connections()).toBe(0);
    } finally {
      await trap.close();
    }
  });
});
