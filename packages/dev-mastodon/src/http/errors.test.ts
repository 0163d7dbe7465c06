import { describe, expect, it } from "vitest";
import { redactUrl } from "./requestLog.js";
import { bearer, json, useInstances } from "../testSupport.js";

const start = useInstances();

describe("error answers", () => {
  it("answers an unknown route like Rails' catch-all: JSON only when asked for first", async () => {
    const m = await start();
    const html = await fetch(`${m.url}/api/v1/nothing/here`);
    expect([html.status, html.headers.get("content-type")]).toEqual([404, "text/html; charset=utf-8"]);
    const asJson = await fetch(`${m.url}/api/v1/nothing/here`, { headers: { accept: "application/json" } });
    expect([asJson.status, await json(asJson)]).toEqual([404, { error: "Not Found" }]);
    const wrongMethod = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, { method: "DELETE" });
    expect(wrongMethod.status).toBe(404);
    m.setUnauthenticatedApi(false);
    expect((await fetch(`${m.url}/api/v1/nothing/here`)).status).toBe(404);
  });

  it("answers malformed JSON with 400 and ignores bodies of unknown types", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const token = bearer(m.issueToken({ username: "alice", scopes: "write" }));
    const url = `${m.url}/api/v1/accounts/update_credentials`;
    const bad = await fetch(url, {
      method: "PATCH",
      headers: { ...token, "content-type": "application/json" },
      body: "{",
    });
    expect(bad.status).toBe(400);
    const other = await fetch(url, {
      method: "PATCH",
      headers: { ...token, "content-type": "text/csv" },
      body: "a,b",
    });
    expect(other.status).toBe(200);
  });

  it("ignores a trailing slash and allows cross-origin API calls", async () => {
    const m = await start();
    expect((await fetch(`${m.url}/api/v2/instance/`)).status).toBe(200);
    const preflight = await fetch(`${m.url}/api/v1/accounts/verify_credentials`, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization",
      },
    });
    expect([preflight.status, preflight.headers.get("access-control-allow-origin")]).toEqual([200, "*"]);
    expect(preflight.headers.get("access-control-allow-headers")).toBe("authorization");
  });
});

describe("request logging", () => {
  it("keeps tokens and codes out of logged URLs", () => {
    expect(redactUrl("/api/v1/x?access_token=abc&acct=alice&code=c")).toBe(
      "/api/v1/x?access_token=%5Bredacted%5D&acct=alice&code=%5Bredacted%5D",
    );
    expect(redactUrl("/api/v2/instance")).toBe("/api/v2/instance");
  });
});
