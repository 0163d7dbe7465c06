import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKeyPair, signDeviceCertificate } from "@mastodon-mls/bridge";
import { HubClient } from "./testing/client.js";
import { startTestDirectory, type TestDirectory } from "./testing/directory.js";
import { randomGroupId } from "./testing/flow.js";
import { HUB_ORIGIN, manualClock, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// A device certificate is self-issued, so what is scoped to an account of this instance (its invitations,
// inviting in its name) needs the device to be listed for the account by the instance's real directory
// (deviceAccess.ts, directoryDevices.ts). Answers are cached for DIRECTORY_CACHE_SECONDS (60 here); the
// hub's clock is moved by hand to get past that window, never waited for.

const MINUTE = 60_000;
const HUB = "https://hub.b.test";

/** Opens a stream, answers the challenge, and returns the stream with the way it ended. */
async function refusedStream(url: string, device: { signer: HubClient["signer"] }) {
  const stream = await StreamClient.connect(url);
  await stream.auth(device.signer, (await stream.next("challenge")).challenge);
  const closed = await stream.closed;
  return { closed, error: await stream.next("error") };
}

async function lookups(hub: TestHub): Promise<number> {
  const text = await (await fetch(`${hub.url}/metrics`)).text();
  return Number(/delivery_directory_lookups_total\{result="ok"\} (\d+)/.exec(text)?.[1] ?? 0);
}

describe("account-scoped requests with a directory", () => {
  const clock = manualClock();
  let directory: TestDirectory;
  let hub: TestHub;
  beforeAll(async () => {
    directory = await startTestDirectory();
    hub = await startHub("memory", { directory, now: clock.now });
  });
  afterAll(async () => {
    await hub.close();
    await directory.close();
  });

  it("serves a registered device and refuses a certificate for the same account by another account key", async () => {
    const [alice, carol] = await Promise.all([TestDevice.create("alice"), TestDevice.create("carol")]);
    await directory.register(alice, carol);
    const g = randomGroupId().text;
    expect(await hub.client(alice).invite("carol@a.test", HUB, g)).toEqual({
      status: 201,
      body: { queued: true },
    });
    const page = await hub.client(carol).inbox();
    expect(page.items).toMatchObject([{ kind: "invitation", from: "alice@a.test", group_id: g }]);

    // Someone signs a certificate for carol@a.test with an account key of their own.
    const forged = await TestDevice.create("carol");
    const refused = { error: "device_not_registered", message: expect.stringContaining("carol@a.test") };
    expect(await hub.client(forged).request("GET", "/v1/inbox")).toEqual({ status: 403, body: refused });
    expect(await hub.client(forged).ack(page.cursor)).toEqual({ status: 403, body: refused });
    expect(await hub.client(forged).invite("alice@a.test", HUB, g)).toEqual({ status: 403, body: refused });
    const stream = await refusedStream(hub.url, forged);
    expect(stream.closed.code).toBe(4001);
    expect(stream.error).toMatchObject({ error: "device_not_registered" });

    // carol's own device key in a certificate by another account key is not carol's registration either.
    const otherKey = await generateSigningKeyPair();
    const now = Math.floor(Date.now() / 1000);
    const recertified = await signDeviceCertificate(
      {
        identity: "acct:carol@a.test",
        accountKey: otherKey.publicKey,
        sigKey: carol.sig.publicKey,
        notBefore: now - 60,
        notAfter: now + 3600,
      },
      otherKey.signKey,
    );
    const sameKey = new HubClient(hub.url, HUB_ORIGIN, {
      certificate: recertified,
      signKey: carol.sig.signKey,
    });
    expect((await sameKey.request("GET", "/v1/inbox")).status).toBe(403);

    // The directory the hub asks is the one it advertises.
    expect(await (await fetch(`${hub.url}/.well-known/mls-services`)).json()).toEqual({
      directory: directory.url,
      delivery: HUB_ORIGIN,
    });
    // The real device still reads; an account of another instance is not the directory's to judge.
    expect((await hub.client(carol).inbox()).items).toHaveLength(1);
    const bob = await TestDevice.create("bob", "b.test");
    expect(await hub.client(bob).request("GET", "/v1/inbox")).toMatchObject({ status: 200 });
  });

  it("asks the directory once per account per cache window, and again for a device it did not list", async () => {
    const [dana, danaLaptop] = await Promise.all([TestDevice.create("dana"), TestDevice.create("dana")]);
    await directory.register(dana);
    const before = await lookups(hub);
    for (let i = 0; i < 3; i++) expect((await hub.client(dana).request("GET", "/v1/inbox")).status).toBe(200);
    expect(await lookups(hub)).toBe(before + 1);

    // A device registered after the answer was cached is not refused from it: the hub asks again.
    await directory.register(danaLaptop);
    expect((await hub.client(danaLaptop).request("GET", "/v1/inbox")).status).toBe(200);
    expect(await lookups(hub)).toBe(before + 2);
    // A device the directory does not list costs it one request per second however often it tries.
    const forged = await TestDevice.create("dana");
    for (let i = 0; i < 3; i++)
      expect((await hub.client(forged).request("GET", "/v1/inbox")).status).toBe(403);
    expect(await lookups(hub)).toBe(before + 3);
    clock.advance(1000);
    expect((await hub.client(forged).request("GET", "/v1/inbox")).status).toBe(403);
    expect(await lookups(hub)).toBe(before + 4);
    // Past the window, the account's answer is asked for again.
    clock.advance(MINUTE);
    expect((await hub.client(dana).request("GET", "/v1/inbox")).status).toBe(200);
    expect(await lookups(hub)).toBe(before + 5);
  });

  it("keeps the answers of a bounded number of accounts, the least recently used going first", async () => {
    const small = await startHub("memory", {
      directory,
      now: clock.now,
      limits: { directoryCacheAccounts: 2 },
    });
    const [hana, ivo, jon] = await Promise.all(["hana", "ivo", "jon"].map((n) => TestDevice.create(n)));
    await directory.register(hana!, ivo!, jon!);
    const read = async (d: TestDevice) =>
      expect((await small.client(d).request("GET", "/v1/inbox")).status).toBe(200);
    await read(hana!);
    await read(ivo!);
    await read(hana!); // cached, and now the most recently used
    expect(await lookups(small)).toBe(2);
    await read(jon!); // a third account: ivo's answer goes
    await read(hana!);
    expect(await lookups(small)).toBe(3);
    await read(ivo!);
    expect(await lookups(small)).toBe(4);
    await small.close();
  });

  it("refuses a revoked device once the cache window has passed, and closes its open stream", async () => {
    const account = await generateSigningKeyPair();
    const [phone, laptop] = await Promise.all([
      TestDevice.create("erin", "a.test", account),
      TestDevice.create("erin", "a.test", account),
    ]);
    await directory.register(phone, laptop);
    const laptopStream = await StreamClient.open(hub.url, laptop.signer);
    expect((await hub.client(laptop).request("GET", "/v1/inbox")).status).toBe(200);

    await directory.publishList([phone]); // revokes the laptop: the directory drops its registration
    // Within the window the hub still goes by the answer it has.
    expect((await hub.client(laptop).request("GET", "/v1/inbox")).status).toBe(200);
    clock.advance(MINUTE);
    expect(await hub.client(laptop).request("GET", "/v1/inbox")).toMatchObject({
      status: 403,
      body: { error: "device_not_registered" },
    });
    // The hub learnt it from that answer: the laptop's open stream is closed at once.
    expect((await laptopStream.closed).code).toBe(4001);
    expect(await laptopStream.next("error")).toMatchObject({ error: "device_not_registered" });
    expect((await hub.client(phone).request("GET", "/v1/inbox")).status).toBe(200);
  });

  it("closes a revoked device's stream on the periodic re-check, when nothing else of its account asks", async () => {
    const account = await generateSigningKeyPair();
    const [phone, laptop] = await Promise.all([
      TestDevice.create("fay", "a.test", account),
      TestDevice.create("fay", "a.test", account),
    ]);
    await directory.register(phone, laptop);
    const [phoneStream, laptopStream] = await Promise.all([
      StreamClient.open(hub.url, phone.signer),
      StreamClient.open(hub.url, laptop.signer),
    ]);
    await directory.publishList([phone]);
    const before = await lookups(hub);
    await hub.delivery.recheckStreams(); // within the window: nothing to ask
    expect(await lookups(hub)).toBe(before);
    clock.advance(MINUTE);
    await hub.delivery.recheckStreams();
    expect(await lookups(hub)).toBe(before + 1);
    expect((await laptopStream.closed).code).toBe(4001);
    expect(await laptopStream.next("error")).toMatchObject({ error: "device_not_registered" });
    // The listed device's stream stays open and keeps working.
    expect((await hub.client(phone).invite("fay@a.test", HUB, randomGroupId().text)).status).toBe(201);
    expect((await phoneStream.items(1))[0]).toMatchObject({ kind: "invitation" });
    phoneStream.close();
  });
});

describe("when the directory cannot be asked", () => {
  const clock = manualClock();
  let directory: TestDirectory;
  let hub: TestHub;
  beforeAll(async () => {
    directory = await startTestDirectory();
    hub = await startHub("memory", { directory, now: clock.now });
  });
  afterAll(async () => {
    await hub.close();
  });

  it("answers 503 directory_unavailable, never device_not_registered, and keeps open streams", async () => {
    const gina = await TestDevice.create("gina");
    await directory.register(gina);
    const open = await StreamClient.open(hub.url, gina.signer);
    await directory.close();
    clock.advance(MINUTE);
    const unavailable = { status: 503, body: { error: "directory_unavailable" } };
    expect(await hub.client(gina).request("GET", "/v1/inbox")).toMatchObject(unavailable);
    expect(await hub.client(gina).invite("gina@a.test", HUB, randomGroupId().text)).toMatchObject(
      unavailable,
    );
    const stream = await refusedStream(hub.url, gina);
    expect(stream.closed.code).toBe(4000); // resume: come back later
    expect(stream.error).toMatchObject({ error: "directory_unavailable" });
    await hub.delivery.recheckStreams();
    // Still open: a frame sent after the re-check is answered (ws keeps order, so a close would come first).
    expect(await open.submit(randomGroupId().text, new Uint8Array([1]))).toMatchObject({ type: "refused" });
    open.close();
  });
});

describe("without a directory", () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub("memory");
  });
  afterAll(async () => {
    await hub.close();
  });

  it("queues no invitations and serves inboxes without any", async () => {
    const [alice, carol] = await Promise.all([TestDevice.create("alice"), TestDevice.create("carol")]);
    expect(await hub.client(alice).invite("carol@a.test", HUB, randomGroupId().text)).toMatchObject({
      status: 503,
      body: { error: "directory_unavailable", message: expect.stringContaining("DIRECTORY_URL") },
    });
    expect(await hub.client(carol).request("GET", "/v1/inbox")).toMatchObject({
      status: 200,
      body: { items: [] },
    });
  });
});
