import { describe, expect, it } from "vitest";
import { bearer, json, useInstances } from "../testSupport.js";
import { RateLimiter } from "./rateLimit.js";

const start = useInstances();

describe("API rate limits", () => {
  it("count every API request in X-RateLimit headers, with Reset as an ISO time with microseconds", async () => {
    const m = await start({ accounts: [{ username: "alice" }] });
    const first = await fetch(`${m.url}/api/v1/accounts/lookup?acct=alice`);
    const second = await fetch(`${m.url}/api/v1/accounts/lookup?acct=nobody`);
    expect(first.headers.get("x-ratelimit-limit")).toBe("300");
    expect([first.headers.get("x-ratelimit-remaining"), second.headers.get("x-ratelimit-remaining")]).toEqual(
      ["299", "298"],
    );
    expect(second.headers.get("x-ratelimit-reset")).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(
      (await fetch(`${m.url}/.well-known/webfinger?resource=acct:alice@a.test`)).headers.has(
        "x-ratelimit-limit",
      ),
    ).toBe(false);
  });

  it("answer 429 past the limit, counting users and anonymous addresses apart", async () => {
    const m = await start({
      accounts: [{ username: "alice" }],
      rateLimits: {
        unauthenticated: { limit: 2, periodSeconds: 300 },
        authenticated: { limit: 3, periodSeconds: 300 },
      },
    });
    const url = `${m.url}/api/v2/instance`;
    expect((await fetch(url)).status).toBe(200);
    expect((await fetch(url)).status).toBe(200);
    const over = await fetch(url);
    expect([over.status, await json(over)]).toEqual([429, { error: "Too many requests" }]);
    expect(over.headers.get("x-ratelimit-remaining")).toBe("0");
    const token = bearer(m.issueToken({ username: "alice", scopes: "read" }));
    const user = await fetch(url, { headers: token });
    expect([user.status, user.headers.get("x-ratelimit-limit")]).toEqual([200, "3"]);
    m.setRateLimits({});
    expect((await fetch(url)).status).toBe(200);
  });

  it("use fixed windows aligned to the period, Reset being Mastodon's now + whole seconds left", () => {
    const limiter = new RateLimiter({
      authenticated: { limit: 1, periodSeconds: 60 },
      unauthenticated: { limit: 1, periodSeconds: 60 },
    });
    const t = Date.UTC(2025, 0, 1, 0, 0, 59, 500);
    expect(limiter.hit("k", limiter.options.unauthenticated, t).over).toBe(false);
    const again = limiter.hit("k", limiter.options.unauthenticated, t + 100);
    expect([again.over, again.headers["x-ratelimit-reset"]]).toEqual([true, "2025-01-01T00:01:00.600000Z"]);
    expect(limiter.hit("k", limiter.options.unauthenticated, t + 600).over).toBe(false);
  });
});
