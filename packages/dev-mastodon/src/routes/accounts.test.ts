import { createRestAPIClient, MastoHttpError } from "masto";
import { describe, expect, it } from "vitest";
import { bearer, json, useInstances } from "../testSupport.js";

const start = useInstances();

async function lookup(url: string, acct: string, headers: Record<string, string> = {}) {
  return fetch(`${url}/api/v1/accounts/lookup?acct=${encodeURIComponent(acct)}`, { headers });
}

describe("GET /api/v1/accounts/lookup", () => {
  it("finds local accounts without a token, by username or user@LOCAL_DOMAIN, case-insensitively", async () => {
    const m = await start({ domain: "a.test", accounts: [{ username: "Alice" }] });
    for (const acct of ["Alice", "alice", "@alice", "alice@a.test", "alice@A.TEST", " alice "]) {
      const res = await lookup(m.url, acct);
      expect(res.status, acct).toBe(200);
      const body = await json(res);
      expect([body.username, body.acct]).toEqual(["Alice", "Alice"]);
    }
  });

  it("answers 404 Record not found for unknown accounts and for remote handles it does not know", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    for (const acct of ["nobody", "alice@b.test", "", "@"]) {
      const res = await lookup(m.url, acct);
      expect([res.status, await json(res)], acct).toEqual([404, { error: "Record not found" }]);
    }
    // WEB_DOMAIN is not LOCAL_DOMAIN: Mastodon treats it as some other server's domain.
    expect((await lookup(m.url, `alice@${new URL(m.url).host}`)).status).toBe(404);
  });

  it("returns a remote account the instance already knows, with its domain in acct", async () => {
    const m = await start();
    m.addRemoteAccount({ username: "bob", domain: "b.test", uri: "https://social.b.test/users/bob" });
    const body = await json(await lookup(m.url, "bob@b.test"));
    expect([body.acct, body.uri, body.url]).toEqual([
      "bob@b.test",
      "https://social.b.test/users/bob",
      "https://b.test/@bob",
    ]);
  });

  it("renders uri and url as the WebFinger self and profile-page links", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const body = await json(await lookup(m.url, "alice"));
    const jrd = await json(await fetch(`${m.url}/.well-known/webfinger?resource=acct:alice@a.test`));
    const links = jrd.links as Array<{ rel: string; href: string }>;
    const link = (rel: string) => links.find((l) => l.rel === rel)?.href;
    expect(body.uri).toBe(link("self"));
    expect(body.url).toBe(link("http://webfinger.net/rel/profile-page"));
    expect(body.uri).toBe(`${m.url}/users/alice`);
  });

  it("shows a suspended account as suspended with its profile blanked", async () => {
    const m = await start({
      accounts: [
        { username: "alice", displayName: "Alice", note: "hi", fields: [{ name: "MLS", value: "mls1.x" }] },
      ],
    });
    m.suspend("alice");
    const body = await json(await lookup(m.url, "alice"));
    expect(body).toMatchObject({
      suspended: true,
      display_name: "",
      note: "",
      fields: [],
      emojis: [],
      locked: false,
    });
    m.unsuspend("alice");
    const back = await json(await lookup(m.url, "alice"));
    expect([back.suspended, back.fields.length]).toEqual([undefined, 1]);
  });

  it("shows where a moved account went", async () => {
    const m = await start({ accounts: [{ username: "alice" }, { username: "alice2" }] });
    m.move("alice", "bob@b.test");
    const remote = await json(await lookup(m.url, "alice"));
    expect([remote.moved.acct, remote.moved.uri]).toEqual(["bob@b.test", "https://b.test/users/bob"]);
    m.move("alice2", "alice");
    const chained = await json(await lookup(m.url, "alice2"));
    expect(chained.moved.acct).toBe("alice");
    expect(chained.moved.moved).toBeUndefined();
  });

  it("checks a presented token's scope, but treats an unknown token string as no token", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const writeOnly = m.issueToken({ username: "alice", scopes: "write" });
    const res = await lookup(m.url, "alice", bearer(writeOnly));
    expect([res.status, await json(res)]).toEqual([
      403,
      { error: "This action is outside the authorized scopes" },
    ]);
    expect((await lookup(m.url, "alice", bearer("garbage"))).status).toBe(200);
  });

  it("requires a user's token when unauthenticated API access is disabled", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    m.setUnauthenticatedApi(false);
    const anonymous = await lookup(m.url, "alice");
    expect([anonymous.status, await json(anonymous)]).toEqual([
      401,
      { error: "This method requires an authenticated user" },
    ]);
    const appOnly = await lookup(m.url, "alice", bearer(m.issueAppToken({ scopes: "read" })));
    expect(appOnly.status).toBe(401);
    expect(
      (await lookup(m.url, "alice", bearer(m.issueToken({ username: "alice", scopes: "read" })))).status,
    ).toBe(200);
    expect((await fetch(`${m.url}/api/v2/instance`)).status).toBe(200);
  });

  it("works through masto.js, whose 404 is a MastoHttpError", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const client = createRestAPIClient({ url: m.url });
    expect((await client.v1.accounts.lookup({ acct: "alice" })).acct).toBe("alice");
    const error: unknown = await client.v1.accounts.lookup({ acct: "nobody" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MastoHttpError);
    expect([(error as MastoHttpError).statusCode, (error as MastoHttpError).message]).toEqual([
      404,
      "Record not found",
    ]);
  });
});

describe("GET /api/v1/accounts/:id", () => {
  it("finds accounts by id and answers 404 for others", async () => {
    const m = await start();
    const alice = m.createAccount({ username: "alice" });
    expect((await json(await fetch(`${m.url}/api/v1/accounts/${alice.id}`))).username).toBe("alice");
    const res = await fetch(`${m.url}/api/v1/accounts/1`);
    expect([res.status, await json(res)]).toEqual([404, { error: "Record not found" }]);
  });
});
