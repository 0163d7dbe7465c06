import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryNonceStore } from "@mastodon-mls/bridge";
import { RedisNonceStore, connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { DEFAULT_RATE_LIMITS, type RateLimits } from "./config.js";
import { LimiterAdmitter, createLimiters, type Admission, type Hit } from "./rateLimits.js";
import { RedisKeys } from "./store/redisKeys.js";

// The admission of authenticated requests (README "Rate limits"): the nonce spent through the nonce
// store, then the request counted by the @fastify/rate-limit limiters in order, on both stores, with
// real Fastify requests. The routes' 429s and the target downgrade are tested end to end in
// rateLimits.test.ts.

const LIMITS: RateLimits = {
  ...DEFAULT_RATE_LIMITS,
  enabled: true,
  device: { max: 2, windowSeconds: 60 },
  domain: { max: 3, windowSeconds: 3600 },
  target: { max: 2, windowSeconds: 3600 },
};

let redisServer: RedisHandle;
const connections: Redis[] = [];
const apps: FastifyInstance[] = [];
beforeAll(async () => {
  redisServer = await startRedis();
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all(connections.map((c) => c.quit()));
  await redisServer.stop();
});

interface Rig {
  /** Admits one real request (a route of a Fastify app calls the admitter with it). */
  admit(nonce: { key: string; ttlSeconds: number } | undefined, hits: readonly Hit[]): Promise<Admission>;
  /** Counts one claim naming `acct` against the `target` limit; true when over it. */
  overTarget(acct: string): Promise<boolean>;
  redis?: { connection: Redis; prefix: string };
}

let run = 0;
async function rig(store: "memory" | "redis", limits: RateLimits = LIMITS): Promise<Rig> {
  const app = Fastify();
  apps.push(app);
  let redis: Rig["redis"];
  if (store === "redis") {
    const connection = connectRedis(redisServer.url, silentLogger(), { enableAutoPipelining: true });
    connections.push(connection);
    run += 1;
    redis = { connection, prefix: `${redisServer.keyPrefix}adm${run}:` };
  }
  const limiters = await createLimiters(app, {
    limits,
    redis: redis && { connection: redis.connection, keys: new RedisKeys(redis.prefix) },
  });
  const nonces = redis ? new RedisNonceStore(redis.connection, redis.prefix) : new MemoryNonceStore();
  const admitter = new LimiterAdmitter(nonces, limiters);
  app.post<{ Body: { nonce?: { key: string; ttlSeconds: number }; hits: Hit[] } }>("/admit", async (req) => ({
    admission: await admitter.admit(req, req.body.nonce, req.body.hits),
  }));
  app.post<{ Body: { acct: string } }>("/target", async (req) => ({
    over: (await limiters.target?.hit(req, req.body.acct))?.exceeded ?? false,
  }));
  await app.ready();
  return {
    async admit(nonce, hits) {
      const res = await app.inject({ method: "POST", url: "/admit", payload: { nonce, hits } });
      expect(res.statusCode, res.body).toBe(200);
      return res.json<{ admission: Admission }>().admission;
    },
    async overTarget(acct) {
      const res = await app.inject({ method: "POST", url: "/target", payload: { acct } });
      expect(res.statusCode, res.body).toBe(200);
      return res.json<{ over: boolean }>().over;
    },
    redis,
  };
}

const ADMITTED = {};
const refusedBy = (limit: string) => ({ refusal: { limit } });

describe.each(["memory", "redis"] as const)("admission, %s store", (store) => {
  const nonce = (n: string) => ({ key: `dev1:${n}`, ttlSeconds: 600 });
  const hits = (device: string, domain: string): Hit[] => [
    { limit: "device", key: device },
    { limit: "domain", key: domain },
  ];

  it("spends a nonce once; a replay is refused and counts nothing", async () => {
    const { admit } = await rig(store);
    expect(await admit(nonce("a"), hits("d1", "x.test"))).toEqual(ADMITTED);
    for (let i = 0; i < 5; i++) expect(await admit(nonce("a"), hits("d1", "x.test"))).toBe("replayed");
    // The replays spent nothing: the device's second request of its window is still admitted.
    expect(await admit(nonce("b"), hits("d1", "x.test"))).toEqual(ADMITTED);
    expect(await admit(nonce("c"), hits("d1", "x.test"))).toMatchObject(refusedBy("device"));
  });

  it("stops at the first limit reached: later limits are not counted", async () => {
    const { admit } = await rig(store);
    for (const n of ["1", "2"]) expect(await admit(nonce(n), hits("d2", "y.test"))).toEqual(ADMITTED);
    // Over the device limit three times: the domain (max 3, two spent) is not counted meanwhile.
    for (const n of ["3", "4", "5"]) {
      const refused = await admit(nonce(n), hits("d2", "y.test"));
      expect(refused).toMatchObject(refusedBy("device"));
      const { refusal } = refused as { refusal: { retryAfterSeconds: number } };
      expect(refusal.retryAfterSeconds).toBeGreaterThan(55);
      expect(refusal.retryAfterSeconds).toBeLessThanOrEqual(60);
    }
    expect(await admit(nonce("6"), hits("d3", "y.test"))).toEqual(ADMITTED);
    const domainRefusal = await admit(nonce("7"), hits("d4", "y.test"));
    expect(domainRefusal).toMatchObject(refusedBy("domain"));
    const { refusal } = domainRefusal as { refusal: { retryAfterSeconds: number } };
    expect(refusal.retryAfterSeconds).toBeGreaterThan(3590);
    expect(refusal.retryAfterSeconds).toBeLessThanOrEqual(3600);
  });

  it("counts without a nonce (bearer-token routes), and spends a nonce with nothing to count", async () => {
    const { admit } = await rig(store);
    const account: Hit[] = [{ limit: "account", key: "alice@a.test" }];
    for (let i = 0; i < DEFAULT_RATE_LIMITS.account.max; i++) {
      expect(await admit(undefined, account)).toEqual(ADMITTED);
    }
    expect(await admit(undefined, account)).toMatchObject(refusedBy("account"));
    // Another account has its own budget.
    expect(await admit(undefined, [{ limit: "account", key: "bob@a.test" }])).toEqual(ADMITTED);
    expect(await admit(nonce("only"), [])).toEqual(ADMITTED);
    expect(await admit(nonce("only"), [])).toBe("replayed");
  });

  it("counts claims per target account, over the budget past its max", async () => {
    const { overTarget } = await rig(store);
    const seen: boolean[] = [];
    for (let i = 0; i < 4; i++) seen.push(await overTarget("target@a.test"));
    expect(seen).toEqual([false, false, true, true]);
    expect(await overTarget("bystander@a.test")).toBe(false);
  });

  it("counts nothing with RATE_LIMITS=off, but still refuses replays", async () => {
    const { admit, overTarget } = await rig(store, { ...LIMITS, enabled: false });
    for (let i = 0; i < 5; i++) expect(await admit(nonce(`off${i}`), hits("d5", "z.test"))).toEqual(ADMITTED);
    expect(await admit(nonce("off0"), hits("d5", "z.test"))).toBe("replayed");
    for (let i = 0; i < 5; i++) expect(await overTarget("free@a.test")).toBe(false);
  });
});

describe("admission, redis specifics", () => {
  it("keeps nonces where service-kit's RedisNonceStore does, and counters under rl:<limit>:", async () => {
    const { admit, overTarget, redis } = await rig("redis");
    const { connection, prefix } = redis!;
    expect(await admit({ key: "dev9:n1", ttlSeconds: 600 }, [{ limit: "device", key: "dev9" }])).toEqual(
      ADMITTED,
    );
    expect(await connection.ttl(`${prefix}nonce:dev9:n1`)).toBeGreaterThan(590);
    expect(await connection.get(`${prefix}rl:device:dev9`)).toBe("1");
    const ttl = await connection.pttl(`${prefix}rl:device:dev9`);
    expect(ttl).toBeGreaterThan(59_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    await overTarget("alice@a.test");
    expect(await connection.get(`${prefix}rl:target:alice@a.test`)).toBe("1");
    expect(await connection.pttl(`${prefix}rl:target:alice@a.test`)).toBeGreaterThan(3_590_000);
  });

  it("shares nonces and counters between two replicas on one Redis", async () => {
    const a = await rig("redis");
    const prefix = a.redis!.prefix;
    // A second app on its own connection, same prefix: as a second replica or worker.
    const app = Fastify();
    apps.push(app);
    const connection = connectRedis(redisServer.url, silentLogger());
    connections.push(connection);
    const limiters = await createLimiters(app, {
      limits: LIMITS,
      redis: { connection, keys: new RedisKeys(prefix) },
    });
    const admitter = new LimiterAdmitter(new RedisNonceStore(connection, prefix), limiters);
    app.post<{ Body: { nonce: { key: string; ttlSeconds: number }; hits: Hit[] } }>(
      "/admit",
      async (req) => ({
        admission: await admitter.admit(req, req.body.nonce, req.body.hits),
      }),
    );
    await app.ready();
    const admitB = async (nonce: { key: string; ttlSeconds: number }, hits: Hit[]) =>
      (await app.inject({ method: "POST", url: "/admit", payload: { nonce, hits } })).json<{
        admission: Admission;
      }>().admission;
    const device: Hit[] = [{ limit: "device", key: "shared" }];
    expect(await a.admit({ key: "shared:n1", ttlSeconds: 600 }, device)).toEqual(ADMITTED);
    expect(await admitB({ key: "shared:n1", ttlSeconds: 600 }, device)).toBe("replayed");
    expect(await admitB({ key: "shared:n2", ttlSeconds: 600 }, device)).toEqual(ADMITTED);
    expect(await a.admit({ key: "shared:n3", ttlSeconds: 600 }, device)).toMatchObject(refusedBy("device"));
  });
});
