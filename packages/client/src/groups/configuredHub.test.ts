import { describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { CliResolver, parseServicesMap } from "../cli/services.js";
import { FAST_RETRY, newClient, useTwoInstances } from "../testSupport/instances.js";

// NET-7: URLs the person configured (a services map: ServiceResolver.configured) are reached wherever they
// are. The CLI's --services-map without development Mastodons is production: a hub named by an invitation
// is checked on arrival (checkRemoteServiceUrl), and a configured hub at a private or loopback IP literal
// was refused there, while the same hub under a host name resolving to that address was followed.

const env = useTwoInstances();

describe("a hub the person configured, named by an invitation", () => {
  it("NET-7: is followed in production even at a loopback IP literal (a services map without development Mastodons)", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver);
    const bob = await newClient(b, "bob", resolver);
    // Bob's device as `mls-dm --services-map '{"a.test": …, "b.test": …}'` runs it: no Mastodons in the map.
    const cli = new CliResolver(parseServicesMap(JSON.stringify({ "a.test": a.urls, "b.test": b.urls })));
    expect(cli.insecureLoopback).toBe(false);
    const mastodons: Record<string, string> = { "a.test": a.mastodon.url, "b.test": b.mastodon.url };
    const bobCli = await MlsDmClient.open(bob.dir, {
      services: cli,
      retry: FAST_RETRY,
      identity: { resolveOrigin: (d) => mastodons[d]!, allowInsecureLoopback: true },
    });
    const { groupId } = await alice.createGroup(["@bob@b.test"]);
    const events = await bobCli.sync();
    expect(events.filter((e) => e.type === "error")).toEqual([]);
    expect(events.some((e) => e.type === "invitation" && e.hub === a.urls.delivery)).toBe(true);
    expect(events.some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
  });

  it("NET-7: the device's own home, named by an invitation at a loopback IP literal, is no error", async () => {
    const { a, resolver } = env;
    const carol = await newClient(a, "carol", resolver);
    const dave = await newClient(a, "dave", resolver);
    // Dave's device with its own services only (plain URLs: every other domain through /.well-known).
    const daveProd = await MlsDmClient.open(dave.dir, {
      services: new CliResolver(parseServicesMap(JSON.stringify({ "a.test": a.urls }))),
      retry: FAST_RETRY,
      identity: { resolveOrigin: () => a.mastodon.url, allowInsecureLoopback: true },
    });
    const { groupId } = await carol.createGroup(["@dave@a.test"]);
    const events = await daveProd.sync();
    expect(events.filter((e) => e.type === "error")).toEqual([]);
    expect(events.some((e) => e.type === "joined" && e.groupId === groupId)).toBe(true);
  });
});
