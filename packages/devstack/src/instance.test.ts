import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { serviceMap, startInstance, type Instance } from "./instance.js";

describe("devstack", () => {
  let a: Instance;
  let b: Instance;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startInstance({ domain: "a.test", accounts: ["alice"] }),
      startInstance({ domain: "b.test", accounts: ["carol"] }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  it("runs two instances side by side, each advertising its own services", async () => {
    expect(serviceMap([a, b])).toEqual({
      "a.test": { directory: a.urls.directory, delivery: a.urls.delivery, mastodon: a.urls.mastodon },
      "b.test": { directory: b.urls.directory, delivery: b.urls.delivery, mastodon: b.urls.mastodon },
    });
    for (const i of [a, b]) {
      for (const url of [i.urls.directory, i.urls.delivery]) {
        const r = await fetch(`${url}/.well-known/mls-services`);
        expect(await r.json()).toEqual({ directory: i.urls.directory, delivery: i.urls.delivery });
        expect((await fetch(`${url}/readyz`)).status).toBe(200);
      }
      const instance = (await (await fetch(`${i.urls.mastodon}/api/v2/instance`)).json()) as {
        domain: string;
      };
      expect(instance.domain).toBe(i.domain);
    }
  });

  it("issues tokens the instance's own directory accepts and the other refuses", async () => {
    const token = a.token("alice");
    const verify = await fetch(`${a.urls.mastodon}/api/v1/accounts/verify_credentials`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(verify.status).toBe(200);
    const foreign = await fetch(`${b.urls.mastodon}/api/v1/accounts/verify_credentials`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(foreign.status).toBe(401);
  });
});

describe("devstack on Redis", () => {
  let redis: RedisHandle;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it("restarts its services on the same ports and store", async () => {
    const i = await startInstance({
      domain: "r.test",
      store: { kind: "redis", url: redis.url, prefix: redis.keyPrefix },
    });
    try {
      const before = i.urls.delivery;
      await i.restartServices();
      expect(i.urls.delivery).toBe(before);
      expect((await fetch(`${i.urls.delivery}/readyz`)).status).toBe(200);
      expect((await fetch(`${i.urls.directory}/readyz`)).status).toBe(200);
    } finally {
      await i.close();
    }
  });
});
