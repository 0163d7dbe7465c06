import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDevMastodon } from "@mastodon-mls/dev-mastodon";
import { lookupAcct, type LookupResult } from "./acctLookup.js";
import { accountKeyFingerprint } from "./profileProof.js";
import { createSafeHttpGet, type DnsLookup } from "./safeHttp.js";
import {
  countingListener,
  mutatingProxy,
  scriptedServer,
  type Closable,
  type Mutations,
} from "./testServers.js";
import { makeUser, setFields, startWorld, type World } from "./testSupport.js";

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => {
  await world.close();
});
const open: Closable[] = [];
afterEach(async () => {
  world.a.fault("none");
  world.b.fault("none");
  await Promise.all(open.splice(0).map((s) => s.close()));
});

/** Looks `acct` up with a.test's WebFinger answered by a proxy that changes one thing. */
async function lookupThroughProxy(
  acct: string,
  mutate: Mutations,
  target = world.a.url,
): Promise<LookupResult> {
  const proxy = await mutatingProxy(target, mutate);
  open.push(proxy);
  const get = createSafeHttpGet({ allowInsecureLoopback: true });
  return lookupAcct(acct, {
    get,
    resolveOrigin: (d) => (d === "a.test" ? proxy.url : world.resolveOrigin(d)),
  });
}

describe("acct lookup against two fake instances", () => {
  it("LK-1…LK-8: finds the proof of accounts on both instances", async () => {
    const alice = await makeUser(world.a, "alice");
    const bob = await makeUser(world.b, "bob", 2);
    for (const user of [alice, bob]) {
      const r = await world.lookup(`@${user.acct.toUpperCase()}`); // LK-1: any spelling of the handle
      expect(r.kind).toBe("found");
      if (r.kind !== "found") continue;
      expect(r.acct).toBe(user.acct);
      expect(Buffer.from(r.proof.fingerprint).toString("base64url")).toBe(
        accountKeyFingerprint(user.accountKey.publicKey),
      );
      expect(r.proof.deviceListVersion).toBe(1);
      expect(r.account).toEqual({ suspended: false, movedTo: null });
    }
  });

  it("LK-8: no-proof without an MLS field or with one we do not understand; PF-5: two MLS fields", async () => {
    const carol = await makeUser(world.a, "carol");
    await setFields(carol, [{ name: "Site", value: "https://carol.example" }]);
    expect(await world.lookup(carol.acct)).toMatchObject({ kind: "no-proof" });
    await setFields(carol, [{ name: "MLS", value: "mls2.something" }]);
    expect(await world.lookup(carol.acct)).toMatchObject({
      kind: "no-proof",
      reason: expect.stringMatching(/understand/),
    });
    const value = "mls1." + "A".repeat(43) + ".1." + "A".repeat(86);
    await setFields(carol, [
      { name: "MLS", value },
      { name: "MLS", value },
    ]);
    expect(await world.lookup(carol.acct)).toMatchObject({ kind: "invalid", rule: "PF-5" });
  });

  it("LK-2: not found (404), deleted or permanently suspended (410)", async () => {
    expect(await world.lookup("nobody@a.test")).toMatchObject({ kind: "not-found", gone: false });
    const dora = await makeUser(world.a, "dora");
    world.a.deleteAccount(dora.username);
    expect(await world.lookup(dora.acct)).toMatchObject({ kind: "not-found", gone: true });
    const eve = await makeUser(world.a, "eve");
    world.a.suspend(eve.username, { permanent: true });
    expect(await world.lookup(eve.acct)).toMatchObject({ kind: "not-found", gone: true });
  });

  it("LK-8: reports a suspended account (its fields hidden) and a moved one", async () => {
    const fay = await makeUser(world.a, "fay");
    world.a.suspend(fay.username);
    expect(await world.lookup(fay.acct)).toMatchObject({ kind: "no-proof", account: { suspended: true } });
    const gus = await makeUser(world.a, "gus");
    world.a.move(gus.username, "gus2@b.test");
    expect(await world.lookup(gus.acct)).toMatchObject({
      kind: "found",
      account: { movedTo: "gus2@b.test" },
    });
  });

  it("LK-2, NET-6: unreachable: an HTML 502, a 500, a 503, a reset, a hang past the time limit, a closed instance", async () => {
    const hal = await makeUser(world.a, "hal");
    for (const fault of ["html502", "500", "503", "reset"] as const) {
      world.a.fault(fault);
      expect([fault, (await world.lookup(hal.acct)).kind]).toEqual([fault, "unreachable"]);
    }
    world.a.fault("hang");
    const get = createSafeHttpGet({ allowInsecureLoopback: true, timeoutMs: 300 });
    const pending = lookupAcct(hal.acct, { get, resolveOrigin: world.resolveOrigin });
    await world.a.untilHeld(1);
    expect(await pending).toMatchObject({ kind: "unreachable", failure: "timeout" });
    world.a.fault("none");

    const gone = await createDevMastodon({ domain: "c.test" });
    const url = gone.url;
    await gone.close();
    const r = await lookupAcct("ida@c.test", { get, resolveOrigin: () => url });
    expect(r).toMatchObject({ kind: "unreachable", failure: "network" });
  });

  it("LK-3: refuses a WebFinger answer for another subject", async () => {
    const jan = await makeUser(world.a, "jan");
    const r = await lookupThroughProxy(jan.acct, {
      "/.well-known/webfinger": (j) => ({ ...j, subject: "acct:mallory@a.test" }),
    });
    expect(r).toMatchObject({ kind: "invalid", rule: "LK-3" });
  });

  it("LK-4: refuses a WebFinger answer without exactly one ActivityPub self link", async () => {
    const kim = await makeUser(world.a, "kim");
    const noSelf = await lookupThroughProxy(kim.acct, {
      "/.well-known/webfinger": (j) => ({
        ...j,
        links: (j.links as Array<{ rel: string }>).filter((l) => l.rel !== "self"),
      }),
    });
    expect(noSelf).toMatchObject({ kind: "invalid", rule: "LK-4" });
  });

  it("LK-6: refuses when the self link is not the account's uri, or the lookup names another account", async () => {
    const lee = await makeUser(world.a, "lee");
    const selfMismatch = await lookupThroughProxy(lee.acct, {
      "/.well-known/webfinger": (j) => ({
        ...j,
        links: (j.links as Array<{ rel: string; href?: string }>).map((l) =>
          l.rel === "self" ? { ...l, href: `${l.href}x` } : l,
        ),
      }),
    });
    expect(selfMismatch).toMatchObject({ kind: "invalid", rule: "LK-6" });
    const uriMismatch = await lookupThroughProxy(lee.acct, {
      "/api/v1/accounts/lookup": (j) => ({ ...j, uri: `${String(j.uri)}/other` }),
    });
    expect(uriMismatch).toMatchObject({ kind: "invalid", rule: "LK-6" });
    const remote = await lookupThroughProxy(lee.acct, {
      "/api/v1/accounts/lookup": (j) => ({ ...j, acct: `${String(j.acct)}@evil.test` }),
    });
    expect(remote).toMatchObject({ kind: "invalid", rule: "LK-6" });
  });

  it("LK-7: refuses an instance whose domain is not the acct's", async () => {
    const mo = await makeUser(world.a, "mo");
    const r = await lookupThroughProxy(mo.acct, {
      "/api/v2/instance": (j) => ({ ...j, domain: "evil.test" }),
    });
    expect(r).toMatchObject({ kind: "invalid", rule: "LK-7" });
  });

  it("LK-7: an instance that reports its domain in another IDNA form (capitals, fullwidth, an ideographic dot) is the same", async () => {
    const mo = await makeUser(world.a, "mo2");
    for (const form of ["A.TEST", "ａ.test", "a\u3002test"]) {
      const r = await lookupThroughProxy(mo.acct, { "/api/v2/instance": (j) => ({ ...j, domain: form }) });
      expect(r, form).toMatchObject({ kind: "found" });
    }
    const bad = await lookupThroughProxy(mo.acct, {
      "/api/v2/instance": (j) => ({ ...j, domain: "a.test/.evil.test" }),
    });
    expect(bad).toMatchObject({ kind: "invalid", rule: "LK-7" });
  });

  it("LK-5, LK-7: a server answering WebFinger for a.test but pointing at b.test's account is refused", async () => {
    // b.test has its own "nia" with a valid proof; a.test's WebFinger claims nia@a.test lives there.
    const nia = await makeUser(world.b, "nia");
    const liar = await scriptedServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/jrd+json" });
      res.end(
        JSON.stringify({
          subject: `acct:${nia.username}@a.test`,
          links: [
            { rel: "self", type: "application/activity+json", href: world.b.account(nia.username).uri },
          ],
        }),
      );
    });
    open.push(liar);
    const get = createSafeHttpGet({ allowInsecureLoopback: true });
    const r = await lookupAcct(`${nia.username}@a.test`, { get, resolveOrigin: () => liar.url });
    // The lookup went to b.test's API (the self link's host) and found nia there, but b.test is not a.test.
    expect(r).toMatchObject({ kind: "invalid", rule: "LK-7" });
  });

  it("NET-3: a lookup aimed at a private or loopback address is refused in production mode", async () => {
    const listener = await countingListener();
    open.push(listener);
    const production = createSafeHttpGet({
      dnsLookup: (() => Promise.resolve([{ address: "127.0.0.1", family: 4 }])) satisfies DnsLookup,
    });
    const viaIp = await lookupAcct("ola@a.test", {
      get: production,
      resolveOrigin: () => "https://10.0.0.1",
    });
    expect(viaIp).toMatchObject({ kind: "unreachable", failure: "policy" });
    const viaName = await lookupAcct("ola@a.test", {
      get: production,
      resolveOrigin: () => `https://mastodon.a.test:${listener.port}`,
    });
    expect(viaName).toMatchObject({ kind: "unreachable", failure: "policy" });
    expect(listener.connections()).toBe(0);
  });
});
