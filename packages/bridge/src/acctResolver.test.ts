import { describe, expect, it } from "vitest";
import { createAcctResolver } from "./acctResolver.js";
import { generateSigningKeyPair } from "./crypto.js";
import { buildProfileFieldValue } from "./profileProof.js";
import { TransportError } from "./httpExchange.js";
import type { HttpGet, HttpResponse } from "./safeHttp.js";

// The cache rules with an injected transport and clock: no network, no waiting.

const key = await generateSigningKeyPair();
const value = await buildProfileFieldValue({
  identity: "acct:alice@a.test",
  accountKey: key,
  deviceListVersion: 3,
});
const ORIGIN = "https://a.test";
const SELF = `${ORIGIN}/users/alice`;

type Mode = "up" | "down" | "no-proof" | "missing";

/** A scripted instance: counts requests, and can hold them until released. */
function instance() {
  const state = { mode: "up" as Mode, requests: 0, hold: undefined as Promise<void> | undefined };
  const json = (status: number, body: unknown): HttpResponse => ({
    status,
    headers: {},
    body: new TextEncoder().encode(JSON.stringify(body)),
    url: "",
  });
  const get: HttpGet = async (url) => {
    state.requests++;
    if (state.hold !== undefined) await state.hold;
    if (state.mode === "down") throw new TransportError("network", "connect ECONNREFUSED");
    const path = new URL(url).pathname;
    if (path === "/.well-known/webfinger") {
      if (state.mode === "missing") return json(404, {});
      return json(200, {
        subject: "acct:alice@a.test",
        links: [{ rel: "self", type: "application/activity+json", href: SELF }],
      });
    }
    if (path === "/api/v1/accounts/lookup") {
      const fields = state.mode === "no-proof" ? [] : [{ name: "MLS", value }];
      return json(200, { acct: "alice", uri: SELF, fields });
    }
    return json(200, { domain: "a.test" });
  };
  return { state, get };
}

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const MIN = 60_000;

describe("acct resolver", () => {
  it("ST-1: concurrent lookups of one acct share one lookup", async () => {
    const { state, get } = instance();
    let release!: () => void;
    state.hold = new Promise((r) => (release = r));
    const resolver = createAcctResolver({ get, now: clock().now });
    const all = Promise.all([
      resolver.lookup("alice@a.test"),
      resolver.lookup("@Alice@a.test"),
      resolver.lookup("alice@a.test"),
    ]);
    release();
    const results = await all;
    expect(results.map((r) => r.kind)).toEqual(["found", "found", "found"]);
    expect(state.requests).toBe(3); // WebFinger, lookup, instance — once
  });

  it("forget: an answer in flight when it was called is handed out, not kept; the next lookup asks anew", async () => {
    const { state, get } = instance();
    let release!: () => void;
    state.hold = new Promise((r) => (release = r));
    const resolver = createAcctResolver({ get, now: clock().now });
    const early = resolver.lookup("alice@a.test");
    resolver.forget("alice@a.test");
    release();
    expect((await early).kind).toBe("found");
    const requests = state.requests;
    expect((await resolver.lookup("alice@a.test")).kind).toBe("found");
    expect(state.requests).toBe(requests + 2); // WebFinger and lookup; the instance's domain is kept (ST-5)
    // That answer is kept.
    await resolver.lookup("alice@a.test");
    expect(state.requests).toBe(requests + 2);
  });

  it("ST-2: keeps answers 10 minutes and failures 1 minute", async () => {
    const { state, get } = instance();
    const c = clock();
    const resolver = createAcctResolver({ get, now: c.now });
    await resolver.lookup("alice@a.test");
    c.advance(10 * MIN - 1);
    await resolver.lookup("alice@a.test");
    expect(state.requests).toBe(3);
    c.advance(1);
    await resolver.lookup("alice@a.test");
    expect(state.requests).toBe(6);

    state.mode = "missing";
    resolver.forget("alice@a.test");
    expect((await resolver.lookup("alice@a.test")).kind).toBe("not-found");
    const before = state.requests;
    c.advance(MIN - 1);
    await resolver.lookup("alice@a.test");
    expect(state.requests).toBe(before);
    c.advance(1);
    state.mode = "up";
    expect((await resolver.lookup("alice@a.test")).kind).toBe("found");
  });

  it("ST-3: serves the last good answer for 24 hours while the instance is unreachable", async () => {
    const { state, get } = instance();
    const c = clock();
    const resolver = createAcctResolver({ get, now: c.now });
    await resolver.lookup("alice@a.test");
    state.mode = "down";
    c.advance(10 * MIN);
    const cached = await resolver.lookup("alice@a.test");
    expect(cached).toMatchObject({
      kind: "found",
      lastGood: { unreachableReason: expect.stringMatching(/ECONNREFUSED/) },
    });
    // Retried after a minute, not ten: the instance may be back.
    const before = state.requests;
    c.advance(MIN);
    await resolver.lookup("alice@a.test");
    expect(state.requests).toBeGreaterThan(before);
    c.advance(24 * 60 * MIN - 11 * MIN - 1);
    expect((await resolver.lookup("alice@a.test")).kind).toBe("found");
    c.advance(1); // 24 hours after the last good answer, even though that lookup was cached a minute ago
    expect((await resolver.lookup("alice@a.test")).kind).toBe("unreachable");
  });

  it("ST-4: an answer without a proof replaces the last good one", async () => {
    const { state, get } = instance();
    const c = clock();
    const resolver = createAcctResolver({ get, now: c.now });
    await resolver.lookup("alice@a.test");
    state.mode = "no-proof";
    c.advance(10 * MIN);
    expect((await resolver.lookup("alice@a.test")).kind).toBe("no-proof");
    state.mode = "down";
    c.advance(10 * MIN);
    expect((await resolver.lookup("alice@a.test")).kind).toBe("unreachable");
  });

  it("ST-2: unreachable without a last good answer is kept only a minute", async () => {
    const { state, get } = instance();
    const c = clock();
    state.mode = "down";
    const resolver = createAcctResolver({ get, now: c.now });
    expect((await resolver.lookup("alice@a.test")).kind).toBe("unreachable");
    state.mode = "up";
    expect((await resolver.lookup("alice@a.test")).kind).toBe("unreachable");
    c.advance(MIN);
    expect((await resolver.lookup("alice@a.test")).kind).toBe("found");
  });

  it("ST-5: an instance's domain (LK-7) is asked once per API origin while answers are kept", async () => {
    const c = clock();
    const asked: string[] = [];
    let domain: unknown = "a.test";
    const json = (body: unknown): HttpResponse => ({
      status: 200,
      headers: {},
      body: new TextEncoder().encode(JSON.stringify(body)),
      url: "",
    });
    const get: HttpGet = (url) => {
      const u = new URL(url);
      asked.push(u.pathname);
      const user = (u.searchParams.get("resource") ?? "").replace(/^acct:|@.*$/g, "");
      if (u.pathname === "/.well-known/webfinger") {
        return Promise.resolve(
          json({
            subject: `acct:${user}@a.test`,
            links: [{ rel: "self", type: "application/activity+json", href: `${ORIGIN}/users/${user}` }],
          }),
        );
      }
      if (u.pathname === "/api/v1/accounts/lookup") {
        const acct = u.searchParams.get("acct")!;
        return Promise.resolve(json({ acct, uri: `${ORIGIN}/users/${acct}`, fields: [] }));
      }
      return Promise.resolve(json({ domain }));
    };
    const instanceAsked = () => asked.filter((p) => p === "/api/v2/instance").length;
    const resolver = createAcctResolver({ get, now: c.now });
    for (const user of ["alice", "bob", "carol"]) {
      expect((await resolver.lookup(`${user}@a.test`)).kind).toBe("no-proof");
    }
    expect(instanceAsked()).toBe(1);
    c.advance(10 * MIN);
    // Asked again once the answers it served with expired; an answer without a domain is not kept.
    domain = 42;
    expect(await resolver.lookup("dave@a.test")).toMatchObject({ kind: "invalid", rule: "LK-7" });
    expect(await resolver.lookup("erin@a.test")).toMatchObject({ kind: "invalid", rule: "LK-7" });
    expect(instanceAsked()).toBe(3);
    domain = "b.test";
    expect(await resolver.lookup("frank@a.test")).toMatchObject({ kind: "invalid", rule: "LK-7" });
    domain = "a.test";
    expect(await resolver.lookup("gina@a.test")).toMatchObject({ kind: "invalid", rule: "LK-7" });
    expect(instanceAsked()).toBe(4); // b.test was kept for that origin
  });
});
