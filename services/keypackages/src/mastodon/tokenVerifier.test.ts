import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevMastodon } from "@mastodon-mls/dev-mastodon";
import { ProtocolError } from "@mastodon-mls/protocol";
import { startMastodon } from "../testing/harness.js";
import { InstanceDomain } from "./instanceDomain.js";
import { MastodonApi } from "./mastodonApi.js";
import { TokenVerifier } from "./tokenVerifier.js";

let mastodon: DevMastodon;
beforeAll(async () => {
  mastodon = await startMastodon("a.test");
  mastodon.createAccount({ username: "Alice_B" });
});
afterAll(async () => {
  await mastodon.close();
});

function verifier(now: () => number) {
  const api = new MastodonApi({ baseUrl: mastodon.url, timeoutMs: 2000 });
  return new TokenVerifier(api, new InstanceDomain(api), { now, cacheSeconds: 60 });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

describe("TokenVerifier", () => {
  it("names the account with the lower-cased username and the instance's domain", async () => {
    const token = mastodon.issueToken({ username: "Alice_B", scopes: "read" });
    const account = await verifier(Date.now).verify(token);
    expect(account).toEqual({ acct: "alice_b@a.test", id: mastodon.account("Alice_B").id });
  });

  it("asks again once the cached verification is a minute old", async () => {
    let t = 1_000_000;
    const v = verifier(() => t);
    const token = mastodon.issueToken({ username: "Alice_B", scopes: "read" });
    await v.verify(token);
    mastodon.revokeToken(token);
    t += 59_000;
    await expect(v.verify(token)).resolves.toMatchObject({ acct: "alice_b@a.test" });
    t += 2_000;
    await expect(codeOf(v.verify(token))).resolves.toBe("invalid_token");
  });

  it("shares one call between concurrent checks of the same token", async () => {
    let calls = 0;
    const api = new MastodonApi({
      baseUrl: mastodon.url,
      timeoutMs: 2000,
      fetch: (input, init) => {
        const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
        if (url.includes("verify_credentials")) calls += 1;
        return fetch(input, init);
      },
    });
    const v = new TokenVerifier(api, new InstanceDomain(api, "a.test"));
    const token = mastodon.issueToken({ username: "Alice_B", scopes: "read" });
    await Promise.all(Array.from({ length: 5 }, () => v.verify(token)));
    expect(calls).toBe(1);
  });
});
