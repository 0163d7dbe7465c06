import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { startTestDirectory, type TestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { manualClock, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// Rate limits (DESIGN §6, §10), counted in Redis (D19, rateLimits.ts): shared across
// replicas, answered with 429, Retry-After and the catalogue body; groups per device.

// Registered before the hubs' hooks: Redis starts first and, the hooks running as a stack, stops last.
const redis = useRedis();
let directory: TestDirectory;
let one: TestHub, two: TestHub;
beforeAll(async () => {
  directory = await startTestDirectory();
  const env = { RATE_SUBMISSIONS: "6", RATE_COMMITS: "2", RATE_INVITATIONS: "2", RATE_WINDOW_SECONDS: "600" };
  const limits = { groupsPerDevice: 2 };
  one = await startHub("redis", { redis: redis(), env, limits, directory });
  two = await startHub("redis", { redis: redis(), env, prefix: one.prefix, limits, directory });
});
afterAll(async () => {
  await Promise.all([one.close(), two.close()]);
  await directory.close();
});

describe("limits", () => {
  it("limits commits and all submissions per device, on every replica and on the stream", async () => {
    const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
    await directory.register(alice, bob);
    const id = randomGroupId();
    await alice.startGroup(id.bytes);
    expect((await one.client(alice).createGroup(id.text)).status).toBe(201); // submission 1
    const add = await alice.commit([addOf(await bob.keyPackage())]);
    expect((await one.client(alice).submit(id.text, add.commit, add.welcome)).status).toBe(201); // 2, commit 1
    add.apply();
    await drain(bob, one.client(bob));
    const update = await alice.commit();
    expect((await two.client(alice).submit(id.text, update.commit)).status).toBe(201); // 3, commit 2
    update.apply();
    const third = await alice.commit();
    const refused = await one.client(alice).request("POST", `/v1/groups/${id.text}/messages`, {
      json: { message: Buffer.from(third.commit).toString("base64url") },
    }); // 4, commit 3: over
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ error: "rate_limited", retry_after: expect.any(Number) });
    expect(refused.body.retry_after).toBeGreaterThan(0);
    expect(refused.body.retry_after).toBeLessThanOrEqual(600);
    expect(refused.headers?.["retry-after"]).toBe(String(refused.body.retry_after));
    // Application messages still go, until all submissions are used up — on the stream too.
    expect((await two.client(alice).submit(id.text, await alice.encrypt("5"))).status).toBe(201);
    const stream = await StreamClient.open(one.url, alice.signer);
    expect(await stream.submit(id.text, await alice.encrypt("6"))).toMatchObject({ type: "submitted" });
    expect(await stream.submit(id.text, await alice.encrypt("7"))).toMatchObject({
      type: "refused",
      error: "rate_limited",
      retry_after: expect.any(Number),
    });
    stream.close();
    // Another device has its own budget.
    await drain(bob, one.client(bob));
    expect((await one.client(bob).submit(id.text, await bob.encrypt("bob"))).status).toBe(201);
    const metrics = await (await fetch(`${one.url}/metrics`)).text();
    expect(metrics).toMatch(/delivery_rate_limited_total\{limit="commits"\} 1/);
    expect(metrics).toMatch(/delivery_rate_limited_total\{limit="submissions"\} 1/);
  });

  it("limits invitations per sending account, whichever device sends", async () => {
    const [phone, laptop] = await Promise.all([TestDevice.create("frank"), TestDevice.create("frank")]);
    await directory.register(phone, laptop);
    const g = randomGroupId().text;
    expect((await one.client(phone).invite("gina@a.test", "https://hub.a.test", g)).status).toBe(201);
    expect((await two.client(laptop).invite("gina@a.test", "https://hub.a.test", g)).status).toBe(201);
    const third = await one.client(laptop).invite("hana@a.test", "https://hub.a.test", g);
    expect(third).toMatchObject({ status: 429, body: { error: "rate_limited" } });
  });

  it("spends none of a device's group budget on a create that names someone else's group", async () => {
    const [owner, jill] = await Promise.all([TestDevice.create("owner"), TestDevice.create("jill")]);
    const taken = [randomGroupId().text, randomGroupId().text];
    for (const g of taken) expect((await one.client(owner).createGroup(g)).status).toBe(201);
    for (const g of taken) expect((await two.client(jill).createGroup(g)).status).toBe(409);
    for (let i = 0; i < 2; i++)
      expect((await one.client(jill).createGroup(randomGroupId().text)).status).toBe(201);
  });

  it("limits the groups a device is in", async () => {
    const [owner, ivan] = await Promise.all([TestDevice.create("owner"), TestDevice.create("ivan")]);
    for (let i = 0; i < 2; i++)
      expect((await one.client(ivan).createGroup(randomGroupId().text)).status).toBe(201);
    const tooMany = await two.client(ivan).createGroup(randomGroupId().text);
    expect(tooMany).toMatchObject({ status: 422, body: { error: "too_many_groups" } });
    const id = randomGroupId();
    await owner.startGroup(id.bytes);
    expect((await one.client(owner).createGroup(id.text)).status).toBe(201);
    const add = await owner.commit([addOf(await ivan.keyPackage())]);
    const refused = await one.client(owner).submit(id.text, add.commit, add.welcome);
    expect(refused).toMatchObject({ status: 422, body: { error: "too_many_groups", device: ivan.deviceId } });
  });
});

describe.each(["memory", "redis"] as const)("invitations per receiving account (%s store)", (kind) => {
  it("limits what an account is sent per window, from everyone, and how many wait for it", async () => {
    const clock = manualClock();
    const hub = await startHub(kind, {
      ...(kind === "redis" ? { redis: redis() } : {}),
      directory,
      now: clock.now,
      env: { RATE_INVITATIONS_RECEIVED: "3", MAX_QUEUED_INVITATIONS: "2", RATE_WINDOW_SECONDS: "600" },
    });
    try {
      // A new device (and account) of another instance for each invitation: the senders' own limits
      // never come into it.
      const invite = async (acct: string) => {
        const sender = await TestDevice.create(`s${Math.random().toString(36).slice(2, 8)}`, "evil.test");
        return hub.client(sender).invite(acct, "https://hub.evil.test", randomGroupId().text);
      };
      expect((await invite("kim@a.test")).status).toBe(201);
      expect((await invite("kim@a.test")).status).toBe(201);
      expect(await invite("kim@a.test")).toMatchObject({
        status: 422,
        body: { error: "too_many_invitations" },
      });
      expect(await hub.delivery.context.store.invitationCount("kim@a.test")).toBe(2);
      // Another account has room and a budget of its own.
      expect((await invite("lee@a.test")).status).toBe(201);
      // kim's invitations age out, but this window's budget for kim is spent (three, the refused one too).
      clock.advance(15 * 86400 * 1000);
      expect((await hub.delivery.sweep()).invitations).toBe(3);
      const limited = await invite("kim@a.test");
      expect(limited).toMatchObject({ status: 429, body: { error: "rate_limited" } });
      expect(limited.headers?.["retry-after"]).toBe(String(limited.body.retry_after));
    } finally {
      await hub.close();
    }
  });
});

describe("while Redis is down", () => {
  const own = useRedis({ mode: "process", persistence: "aof" });

  it("answers 503 store_unavailable, never 500, over HTTP and on the stream, and serves again once it is back", async () => {
    const hub = await startHub("redis", { redis: own(), directory });
    try {
      const alice = await TestDevice.create("alice");
      await directory.register(alice);
      const id = randomGroupId();
      await alice.startGroup(id.bytes);
      expect((await hub.client(alice).createGroup(id.text)).status).toBe(201);
      const stream = await StreamClient.open(hub.url, alice.signer);
      await own().kill();
      const http = await hub.client(alice).submit(id.text, await alice.encrypt("while down"));
      expect(http).toMatchObject({ status: 503, body: { error: "store_unavailable" } });
      expect(http.headers?.["retry-after"]).toBe("1");
      // On the stream: the submission is refused as such, unless the stream was closed first with the
      // code that means "reconnect and resume" (its own reads fail too): nothing else, no 1011.
      const outcome = await Promise.race([
        stream.submit(id.text, await alice.encrypt("while down")),
        stream.closed,
      ]);
      if ("type" in outcome) {
        expect(outcome).toMatchObject({ type: "refused", error: "store_unavailable" });
      } else {
        expect(outcome.code).toBe(4000);
      }
      stream.close();
      await own().restart();
      expect((await hub.client(alice).submit(id.text, await alice.encrypt("back"))).status).toBe(201);
    } finally {
      await hub.close();
    }
  });
});
