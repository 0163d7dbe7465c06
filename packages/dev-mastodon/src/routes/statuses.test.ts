import { createRestAPIClient, MastoHttpError } from "masto";
import { describe, expect, it } from "vitest";
import { bearer, json, pluck, useInstances } from "../testSupport.js";

const start = useInstances();

async function trio() {
  const m = await start({ accounts: [{ username: "alice" }, { username: "bob" }, { username: "carol" }] });
  const token = (username: string, scopes = "read write") => m.issueToken({ username, scopes });
  return { m, token };
}

describe("direct statuses", () => {
  it("reach only the mentioned accounts (masto.js statuses.create)", async () => {
    const { m, token } = await trio();
    const alice = createRestAPIClient({ url: m.url, accessToken: token("alice") });
    const status = await alice.v1.statuses.create({ status: "@bob@a.test hello <b>", visibility: "direct" });
    expect(status.visibility).toBe("direct");
    expect(status.mentions.map((a) => a.acct)).toEqual(["bob"]);
    expect(status.content).toBe(
      `<p><span class="h-card" translate="no"><a href="${m.url}/@bob" class="u-url mention">@<span>bob</span></a></span> hello &lt;b&gt;</p>`,
    );
    expect(m.receivedStatuses("bob")).toMatchObject([
      { id: status.id, from: "alice@a.test", text: "@bob@a.test hello <b>", mentions: ["bob@a.test"] },
    ]);
    expect(m.receivedStatuses("carol")).toEqual([]);
  });

  it("can be read by the author and the mentioned, and is 404 for anyone else", async () => {
    const { m, token } = await trio();
    const created = await json(
      await fetch(`${m.url}/api/v1/statuses`, {
        method: "POST",
        headers: { ...bearer(token("alice")), "content-type": "application/json" },
        body: JSON.stringify({ status: "@bob secret", visibility: "direct" }),
      }),
    );
    const read = (headers: Record<string, string>) =>
      fetch(`${m.url}/api/v1/statuses/${created.id}`, { headers });
    expect((await read(bearer(token("alice")))).status).toBe(200);
    expect((await read(bearer(token("bob")))).status).toBe(200);
    const carol = await read(bearer(token("carol")));
    expect([carol.status, await json(carol)]).toEqual([404, { error: "Record not found" }]);
    expect((await read({})).status).toBe(404);
  });

  it("returns the same status for a repeated Idempotency-Key", async () => {
    const { m, token } = await trio();
    const alice = createRestAPIClient({ url: m.url, accessToken: token("alice") });
    const meta = { requestInit: { headers: { "Idempotency-Key": "k-1" } } };
    const first = await alice.v1.statuses.create({ status: "@bob once", visibility: "direct" }, meta);
    const second = await alice.v1.statuses.create({ status: "@bob once", visibility: "direct" }, meta);
    const third = await alice.v1.statuses.create({ status: "@bob once", visibility: "direct" });
    expect(second.id).toBe(first.id);
    expect(third.id).not.toBe(first.id);
    expect(m.receivedStatuses("bob")).toHaveLength(2);
  });

  it("lists them as conversations of each participant", async () => {
    const { m, token } = await trio();
    const alice = createRestAPIClient({ url: m.url, accessToken: token("alice") });
    await alice.v1.statuses.create({ status: "@bob @carol hi both", visibility: "direct" });
    const bobs = await json(await fetch(`${m.url}/api/v1/conversations`, { headers: bearer(token("bob")) }));
    expect(bobs).toHaveLength(1);
    expect(bobs[0].unread).toBe(true);
    expect(pluck(bobs[0].accounts, "acct").sort()).toEqual(["alice", "carol"]);
  });

  it("are refused when empty, too long, or written with a read-only token", async () => {
    const { m, token } = await trio();
    const post = (body: unknown, t = token("alice")) =>
      fetch(`${m.url}/api/v1/statuses`, {
        method: "POST",
        headers: { ...bearer(t), "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const empty = await post({ status: "  ", visibility: "direct" });
    expect([empty.status, await json(empty)]).toEqual([
      422,
      { error: "Validation failed: Text can't be blank" },
    ]);
    const long = await post({ status: "x".repeat(501) });
    expect([long.status, await json(long)]).toEqual([
      422,
      { error: "Validation failed: Text character limit of 500 exceeded" },
    ]);
    // A URL counts as 23 characters, however long it is.
    expect((await post({ status: `${"x".repeat(470)} https://example.com/${"y".repeat(100)}` })).status).toBe(
      200,
    );
    const readOnly = await post({ status: "hi" }, token("alice", "read"));
    expect(readOnly.status).toBe(403);
    const client = createRestAPIClient({ url: m.url, accessToken: token("alice", "read") });
    const error: unknown = await client.v1.statuses.create({ status: "hi" }).catch((e: unknown) => e);
    expect((error as MastoHttpError).statusCode).toBe(403);
  });
});
