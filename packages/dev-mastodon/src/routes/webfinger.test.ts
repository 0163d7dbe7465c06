import { describe, expect, it } from "vitest";
import { json, useInstances } from "../testSupport.js";

const start = useInstances();

function webfinger(url: string, resource?: string) {
  const query = resource === undefined ? "" : `?resource=${encodeURIComponent(resource)}`;
  return fetch(`${url}/.well-known/webfinger${query}`);
}

describe("GET /.well-known/webfinger", () => {
  it("answers application/jrd+json with the subject on LOCAL_DOMAIN and links on the web origin", async () => {
    const m = await start({
      domain: "a.test",
      publicUrl: "https://social.a.test",
      accounts: [{ username: "alice" }],
    });
    const res = await webfinger(m.listenUrl, "acct:alice@a.test");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/jrd\+json/);
    expect(await json(res)).toEqual({
      subject: "acct:alice@a.test",
      aliases: ["https://social.a.test/@alice", "https://social.a.test/users/alice"],
      links: [
        {
          rel: "http://webfinger.net/rel/profile-page",
          type: "text/html",
          href: "https://social.a.test/@alice",
        },
        { rel: "self", type: "application/activity+json", href: "https://social.a.test/users/alice" },
        {
          rel: "http://ostatus.org/schema/1.0/subscribe",
          template: "https://social.a.test/authorize_interaction?uri={uri}",
        },
      ],
    });
  });

  it("accepts the handle without acct:, on the web domain, in another case, and actor URLs", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const host = new URL(m.url).host;
    for (const resource of [
      "alice@a.test",
      `acct:alice@${host}`,
      "acct:ALICE@A.test",
      `${m.url}/users/alice`,
      `${m.url}/@alice`,
    ]) {
      const res = await webfinger(m.url, resource);
      expect(res.status, resource).toBe(200);
      expect((await json(res)).subject).toBe("acct:alice@a.test");
    }
  });

  it("answers 400 without a usable resource, 404 for unknown accounts or domains, with empty bodies", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const cases: Array<[string | undefined, number]> = [
      [undefined, 400],
      ["", 400],
      ["alice", 400],
      ["acct:nobody@a.test", 404],
      ["acct:alice@b.test", 404],
      [`${m.url}/about`, 404],
    ];
    for (const [resource, status] of cases) {
      const res = await webfinger(m.url, resource);
      expect(res.status, String(resource)).toBe(status);
      expect(await res.text()).toBe("");
    }
  });

  it("keeps answering for a suspension that can still be undone, and 410 once final or deleted", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    m.suspend("alice");
    expect((await webfinger(m.url, "acct:alice@a.test")).status).toBe(200);
    m.suspend("alice", { permanent: true });
    expect((await webfinger(m.url, "acct:alice@a.test")).status).toBe(410);
    m.unsuspend("alice");
    expect((await webfinger(m.url, "acct:alice@a.test")).status).toBe(200);
    m.deleteAccount("alice");
    const gone = await webfinger(m.url, "acct:alice@a.test");
    expect([gone.status, await gone.text()]).toEqual([410, ""]);
  });

  it("serves host-meta pointing at the WebFinger template", async () => {
    const m = await start();
    const res = await fetch(`${m.url}/.well-known/host-meta`);
    expect(res.headers.get("content-type")).toMatch(/^application\/xrd\+xml/);
    expect(await res.text()).toContain(`template="${m.url}/.well-known/webfinger?resource={uri}"`);
  });
});
