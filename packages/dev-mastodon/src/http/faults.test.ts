import { createRestAPIClient, MastoHttpError } from "masto";
import { describe, expect, it } from "vitest";
import { json, useInstances } from "../testSupport.js";

const start = useInstances();

describe("fault injection", () => {
  it("html502 answers nginx's HTML page, which masto.js cannot read as an API error", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    m.fault("html502");
    const res = await fetch(`${m.url}/api/v1/accounts/lookup?acct=alice`);
    expect([res.status, res.headers.get("content-type")]).toEqual([502, "text/html"]);
    expect(await res.text()).toContain("502 Bad Gateway");
    const error: unknown = await createRestAPIClient({ url: m.url })
      .v1.accounts.lookup({ acct: "alice" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(MastoHttpError);
    m.fault("none");
    expect((await fetch(`${m.url}/api/v1/accounts/lookup?acct=alice`)).status).toBe(200);
  });

  it("500 is Mastodon's HTML error page and 503 its JSON temporary error", async () => {
    const m = await start();
    m.fault("500");
    const html = await fetch(`${m.url}/api/v2/instance`);
    expect([html.status, html.headers.get("content-type")]).toEqual([500, "text/html; charset=utf-8"]);
    m.fault("503");
    const error: unknown = await createRestAPIClient({ url: m.url })
      .v2.instance.fetch()
      .catch((e: unknown) => e);
    expect((error as MastoHttpError).statusCode).toBe(503);
  });

  it("can be limited to a path prefix", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    m.fault("html502", { pathPrefix: "/.well-known/" });
    expect((await fetch(`${m.url}/.well-known/webfinger?resource=acct:alice@a.test`)).status).toBe(502);
    expect((await fetch(`${m.url}/api/v1/accounts/lookup?acct=alice`)).status).toBe(200);
  });

  it("reset closes the connection without an answer", async () => {
    const m = await start();
    m.fault("reset");
    await expect(fetch(`${m.url}/api/v2/instance`)).rejects.toThrow(TypeError);
  });

  it("hang holds requests until the fault changes, then answers them under the new one", async () => {
    const m = await start();
    m.fault("hang");
    let settled = false;
    const held = fetch(`${m.url}/api/v2/instance`).then((r) => {
      settled = true;
      return r;
    });
    await m.untilHeld(1);
    expect([m.heldRequests, settled]).toEqual([1, false]);
    m.fault("html502");
    expect((await held).status).toBe(502);
    expect(m.heldRequests).toBe(0);
  });

  it("hang lets a client time out, and close() is prompt with requests still held", async () => {
    const m = await start();
    m.fault("hang");
    const timedOut = fetch(`${m.url}/api/v2/instance`, { signal: AbortSignal.timeout(50) });
    await expect(timedOut).rejects.toThrow(/timeout|abort/i);
    const dropped = fetch(`${m.url}/api/v2/instance`);
    await m.untilHeld(1);
    await m.close();
    await expect(dropped).rejects.toThrow(TypeError);
  });

  it("applies before authentication and routing", async () => {
    const m = await start();
    m.fault("503");
    const res = await fetch(`${m.url}/no/such/route`);
    expect([res.status, (await json(res)).error]).toEqual([
      503,
      "There was a temporary problem serving your request, please try again",
    ]);
  });
});
