import { connect } from "node:net";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MemoryNonceStore,
  generateSigningKeyPair,
  signDeviceCertificate,
  signRequest,
  type DeviceSigner,
} from "@mastodon-mls/bridge";
import { STREAM_CLOSE, toBase64url } from "@mastodon-mls/protocol";
import { sha256 } from "@mastodon-mls/bridge";
import { StoreUnavailableError, silentLogger } from "@mastodon-mls/service-kit";
import { waitFor } from "@mastodon-mls/testkit";
import { loadDeliveryConfig } from "./config.js";
import { createDelivery, type Delivery } from "./service.js";
import { MemoryDeliveryStore } from "./store/memory.js";
import type { IndexSettlement } from "./store/types.js";
import { HubClient } from "./testing/client.js";
import { privateMessage } from "./testing/craft.js";
import type { TestDirectory } from "./testing/directory.js";
import { drain, randomGroupId } from "./testing/flow.js";
import { HUB_ORIGIN, manualClock, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf, removeOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// Hostile input against the hub, from an audit (2026-11-27): cursors ahead of the inbox, floods of submit
// frames, a re-add racing the end of a removal, minted senders of invitations, nonces, fork records, and
// a pass over odd frames, bodies and headers that must all be 4xx or a documented close code.

const cursorOf = (p: Record<string, number>) =>
  Buffer.from(JSON.stringify({ v: 1, p }), "utf8").toString("base64url");

describe("hostile input (memory store)", () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub("memory", { limits: { groupsPerDevice: 3 } });
  });
  afterAll(async () => {
    await hub.close();
  });

  it("stream: an `after` cursor beyond the inbox does not make the device lose later messages", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
    // alice's only stream is "1.0" (group number 1, first stretch), at seq 0. A cursor far ahead of it —
    // garbage, or a real cursor of another device whose group number 1 is further along.
    const ahead = cursorOf({ "1.0": 100 });
    const stream = await StreamClient.connect(hub.url);
    const challenge = await stream.next("challenge");
    await stream.auth(alice.signer, challenge.challenge, ahead);
    // Refused before `ready`: the stream would push only what lies after it, and acknowledge up to it.
    const closed = await stream.closed;
    expect(closed.code).toBe(STREAM_CLOSE.badFrame);
    // A message arrives for alice (seq 1): it is in her inbox, nothing acknowledged it away.
    const sent = await hub.client(alice).submit(g.text, privateMessage(g.bytes, 0n, 32));
    expect(sent.status).toBe(201);
    const page = await hub.client(alice).inbox();
    expect(page.items.map((i) => [i.kind, "seq" in i ? i.seq : -1])).toEqual([["message", 1]]);
  });

  it("HTTP: GET /v1/inbox?after=<position beyond the inbox> is invalid_cursor", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
    const answer = await hub.client(alice).request("GET", `/v1/inbox?after=${cursorOf({ "1.0": 100 })}`);
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({ error: "invalid_cursor" });
  });

  it("stream: submit answers come in frame order, also the one refused for a full queue", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
    const stream = await StreamClient.open(hub.url, alice.signer);
    const order: string[] = [];
    stream.socket.on("message", (data: Buffer) => {
      const f = JSON.parse(data.toString("utf8")) as { type: string; id?: string };
      if (f.type === "submitted" || f.type === "refused") order.push(f.id!);
    });
    // 65 submit frames in one burst: the 65th finds 64 waiting (the documented maximum).
    // One TCP write, so that the hub reads all 65 frames at once (as a fast client on a real network does).
    const raw = (stream.socket as unknown as { _socket: import("node:net").Socket })._socket;
    raw.cork();
    const ids: string[] = [];
    for (let i = 0; i < 65; i++) ids.push(stream.submitFrame(g.text, privateMessage(g.bytes, 0n, 16)));
    raw.uncork();
    const answers = await Promise.all(ids.map((id) => stream.answer(id)));
    stream.close();
    expect(answers.at(-1)).toMatchObject({ type: "refused", error: "rate_limited" });
    // docs: "answered in order"; protocol: "answers come in the order of the submit frames".
    expect(order).toEqual(ids);
  });

  it("stream: a client that keeps sending while as many refusals as submissions wait is cut off to resume, not held frame by frame", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
    const stream = await StreamClient.open(hub.url, alice.signer);
    const closed = new Promise<number>((resolve) => stream.socket.on("close", (code) => resolve(code)));
    // 64 submissions waiting, 64 refusals behind them, and one more: all read in one go (one TCP write).
    const raw = (stream.socket as unknown as { _socket: import("node:net").Socket })._socket;
    raw.cork();
    for (let i = 0; i < 64 * 2 + 1; i++) stream.submitFrame(g.text, privateMessage(g.bytes, 0n, 16));
    raw.uncork();
    expect(await closed).toBe(STREAM_CLOSE.resume);
  });

  it("a group id of 87–100 characters in a path is 400, not 413 payload_too_large", async () => {
    const alice = await TestDevice.create("alice");
    const long = "A".repeat(88);
    const status = await hub.client(alice).request("GET", `/v1/groups/${long}`);
    expect(status.status).toBe(400);
    const submit = await hub.client(alice).submit(long, privateMessage(new Uint8Array(16), 0n, 16));
    expect(submit.status).toBe(400);
    const fork = await hub.client(alice).request("POST", `/v1/groups/${long}/commit-rejected`, {
      json: { epoch: 0, commit_hash: "A".repeat(43), reason: "x" },
    });
    expect(fork.status).toBe(400);
  });

  it("POST /v1/groups with someone else's group id does not spend the device's group budget", async () => {
    const owner = await TestDevice.create("owner");
    const mallory = await TestDevice.create("mallory");
    const taken: string[] = [];
    for (let i = 0; i < 3; i++) {
      const g = randomGroupId().text;
      expect((await hub.client(owner).createGroup(g)).status).toBe(201);
      taken.push(g);
    }
    for (const g of taken) expect((await hub.client(mallory).createGroup(g)).status).toBe(409);
    // mallory is in no group at all; groupsPerDevice is 3 here.
    const own = await hub.client(mallory).createGroup(randomGroupId().text);
    expect(own.status).toBe(201);
  });
});

/** A hub on port 0 with the memory store (or one given), built as testing/hub.ts does. */
async function startCustomHub(deps: Parameters<typeof createDelivery>[1], env: Record<string, string> = {}) {
  const config = loadDeliveryConfig({
    PORT: "0",
    PUBLIC_URL: HUB_ORIGIN,
    INSTANCE_DOMAIN: "a.test",
    LOG_LEVEL: "silent",
    STORE: "memory",
    ...env,
  });
  const delivery: Delivery = await createDelivery(config, { logger: silentLogger(), ...deps });
  const url = await delivery.listen();
  return { delivery, url, client: (d: TestDevice) => new HubClient(url, HUB_ORIGIN, d.signer) };
}

/**
 * The memory store, whose forgetDeviceGroup can be held until the test lets it go (a Redis round trip,
 * widened), or made to fail once, as a process that died before it would; and more hooks below.
 */
class ForgetHookStore extends MemoryDeliveryStore {
  gate: Promise<void> | undefined;
  entered: (() => void) | undefined;
  failNext = false;
  override async forgetDeviceGroup(device: string, groupId: string): Promise<IndexSettlement> {
    if (this.gate) {
      this.entered?.();
      await this.gate;
    }
    if (this.failNext) {
      this.failNext = false;
      throw new StoreUnavailableError();
    }
    return super.forgetDeviceGroup(device, groupId);
  }

  /** Commits wait at this gate (once), after their request wrote the added devices' entries. */
  commitGate: Promise<void> | undefined;
  commitEntered: (() => void) | undefined;
  override async commit(...args: Parameters<MemoryDeliveryStore["commit"]>) {
    const gate = this.commitGate;
    if (gate) {
      this.commitGate = undefined;
      this.commitEntered?.();
      await gate;
    }
    return super.commit(...args);
  }

  /** beginAdd fails for this device (a Redis error on its slot). */
  failBeginFor: string | undefined;
  override async beginAdd(device: string, groupId: string, token: string, max: number) {
    if (device === this.failBeginFor) throw new StoreUnavailableError();
    return super.beginAdd(device, groupId, token, max);
  }
}

/** The memory store, whose commits wait until `expected` of them arrived: each was screened first. */
class CommitBarrierStore extends MemoryDeliveryStore {
  expected = 0;
  private waiting: (() => void)[] = [];
  override async commit(...args: Parameters<MemoryDeliveryStore["commit"]>) {
    if (this.expected > 0) {
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        if (this.waiting.length === this.expected) {
          this.expected = 0;
          for (const go of this.waiting.splice(0)) go();
        }
      });
    }
    return super.commit(...args);
  }
}

/** The memory store, whose next createGroup fails as a Redis that went away would. */
class FailingCreateStore extends MemoryDeliveryStore {
  failNext = false;
  override async createGroup(g: Parameters<MemoryDeliveryStore["createGroup"]>[0]): Promise<boolean> {
    if (this.failNext) {
      this.failNext = false;
      throw new StoreUnavailableError();
    }
    return super.createGroup(g);
  }
}

describe("store failures", () => {
  it("a group creation the store failed gives back the place it took in the device's budget", async () => {
    const store = new FailingCreateStore();
    const hub = await startCustomHub({ store, limits: { groupsPerDevice: 1 } });
    try {
      const alice = await TestDevice.create("alice");
      store.failNext = true;
      const failed = await hub.client(alice).createGroup(randomGroupId().text);
      expect(failed).toMatchObject({ status: 503, body: { error: "store_unavailable" } });
      expect(await store.deviceGroupCount(alice.deviceId)).toBe(0);
      // Her only place is still hers.
      expect((await hub.client(alice).createGroup(randomGroupId().text)).status).toBe(201);
    } finally {
      await hub.delivery.close();
    }
  });
});

/** alice's group, bob added at seq 1 and removed at seq 2, alice up to date, bob's last page read. */
async function bobAddedAndRemoved(hub: { client: (d: TestDevice) => HubClient }) {
  const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
  const g = randomGroupId();
  await alice.startGroup(g.bytes);
  expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
  const add = await alice.commit([addOf(await bob.keyPackage())]);
  expect((await hub.client(alice).submit(g.text, add.commit, add.welcome)).status).toBe(201);
  add.apply();
  await drain(bob, hub.client(bob));
  const removal = await alice.commit([removeOf(bob.leaf)]);
  expect((await hub.client(alice).submit(g.text, removal.commit)).status).toBe(201);
  removal.apply();
  await drain(alice, hub.client(alice));
  // bob reads his removal; acknowledging this page ends his stretch.
  const page = await hub.client(bob).inbox();
  expect(page.items.map((i) => i.kind)).toEqual(["message", "removed"]);
  return { alice, bob, g, page };
}

/** alice's new group at the hub, and two devices she may add. */
async function aliceGroupWithFriends(hub: { client: (d: TestDevice) => HubClient }) {
  const [alice, bob, carol] = await Promise.all([
    TestDevice.create("alice"),
    TestDevice.create("bob"),
    TestDevice.create("carol"),
  ]);
  const g = randomGroupId();
  await alice.startGroup(g.bytes);
  expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
  return { alice, bob, carol, g };
}

describe("races", () => {
  it("a device re-added while its ack of `removed` is finishing still gets its Welcome", async () => {
    const store = new ForgetHookStore();
    const hub = await startCustomHub({ store });
    try {
      // bob reads his removal and acknowledges the `removed` item …
      const { alice, bob, g, page } = await bobAddedAndRemoved(hub);
      let release!: () => void;
      store.gate = new Promise((r) => (release = r));
      const entered = new Promise<void>((r) => (store.entered = r));
      const ack = hub.client(bob).ack(page.cursor);
      await entered; // the group already counts bob as done; the index entry is about to go
      store.gate = undefined;
      // … while alice adds him back.
      const readd = await alice.commit([addOf(await bob.keyPackage())]);
      expect((await hub.client(alice).submit(g.text, readd.commit, readd.welcome)).status).toBe(201);
      readd.apply();
      release();
      expect((await ack).status).toBe(200);

      // bob is a member again (the hub's roster says so) …
      expect((await hub.client(bob).request("GET", `/v1/groups/${g.text}`)).status).toBe(200);
      // … so his inbox must hold the Welcome of the re-adding commit.
      const after = await hub.client(bob).inbox();
      expect(after.items.map((i) => i.kind)).toContain("welcome");
    } finally {
      await hub.delivery.close();
    }
  });

  it("a device whose ack of `removed` stopped half-way gets the Welcome of the very next commit re-adding it", async () => {
    const store = new ForgetHookStore();
    const hub = await startCustomHub({ store });
    try {
      // bob acknowledges his `removed` item (position 3); the group forgets him, and the process "dies"
      // before his index entry is settled.
      const { alice, bob, g, page } = await bobAddedAndRemoved(hub);
      store.failNext = true;
      expect((await hub.client(bob).ack(page.cursor)).status).toBe(503);
      // The re-adding commit is seq 3: where the old stretch's `removed` was, which bob acknowledged.
      const readd = await alice.commit([addOf(await bob.keyPackage())]);
      const accepted = await hub.client(alice).submit(g.text, readd.commit, readd.welcome);
      expect(accepted).toMatchObject({ status: 201, body: { seq: 3 } });
      readd.apply();
      const after = await drain(bob, hub.client(bob));
      expect(after.map((i) => i.kind)).toEqual(["welcome"]);
      // … and he is in the group again, at alice's epoch.
      const hello = await alice.encrypt("welcome back");
      expect((await hub.client(alice).submit(g.text, hello)).status).toBe(201);
      expect((await drain(bob, hub.client(bob))).map((i) => i.text)).toEqual(["welcome back"]);
    } finally {
      await hub.delivery.close();
    }
  });

  it("a re-add whose entry was written before the device's ack of `removed`, landing after that ack's settle failed, delivers its Welcome", async () => {
    const store = new ForgetHookStore();
    const hub = await startCustomHub({ store });
    try {
      const { alice, bob, g, page } = await bobAddedAndRemoved(hub);
      // alice re-adds bob: her request writes bob's entry (it is there already, with its number) and
      // stops before the commit step.
      let release!: () => void;
      store.commitGate = new Promise((r) => (release = r));
      const entered = new Promise<void>((r) => (store.commitEntered = r));
      const readd = await alice.commit([addOf(await bob.keyPackage())]);
      const submitted = hub.client(alice).submit(g.text, readd.commit, readd.welcome);
      await entered;
      // bob acknowledges his `removed` item (3): the group forgets him; the settle fails (a Redis error,
      // or the process dies), so his client sees 503.
      store.failNext = true;
      expect((await hub.client(bob).ack(page.cursor)).status).toBe(503);
      // The re-add lands: seq 3, where the old `removed` was.
      release();
      expect(await submitted).toMatchObject({ status: 201, body: { seq: 3 } });
      readd.apply();
      // bob's client retries its ack (it got a 503), then reads: the Welcome comes, and he is in.
      expect((await hub.client(bob).ack(page.cursor)).status).toBe(200);
      expect((await drain(bob, hub.client(bob))).map((i) => i.kind)).toEqual(["welcome"]);
      const hello = await alice.encrypt("still here");
      expect((await hub.client(alice).submit(g.text, hello)).status).toBe(201);
      expect((await drain(bob, hub.client(bob))).map((i) => i.text)).toEqual(["still here"]);
    } finally {
      await hub.delivery.close();
    }
  });

  it("a commit that fails while writing its added devices' entries gives back the places it took", async () => {
    const store = new ForgetHookStore();
    const hub = await startCustomHub({ store });
    try {
      const { alice, bob, carol, g } = await aliceGroupWithFriends(hub);
      const adds = await alice.commit([addOf(await carol.keyPackage()), addOf(await bob.keyPackage())]);
      store.failBeginFor = bob.deviceId;
      expect((await hub.client(alice).submit(g.text, adds.commit, adds.welcome)).status).toBe(503);
      // carol's entry was written, and goes with the failed request.
      expect(await store.deviceGroupCount(carol.deviceId)).toBe(0);
      expect(await store.deviceGroupCount(bob.deviceId)).toBe(0);
      // Once the store is back, the same commit goes through.
      store.failBeginFor = undefined;
      expect((await hub.client(alice).submit(g.text, adds.commit, adds.welcome)).status).toBe(201);
      expect(await store.deviceGroupCount(carol.deviceId)).toBe(1);
    } finally {
      await hub.delivery.close();
    }
  });

  it("a refused commit takes no place in the budget of the devices it would have added", async () => {
    const store = new CommitBarrierStore();
    const hub = await startCustomHub({ store });
    try {
      const { alice, bob, carol, g } = await aliceGroupWithFriends(hub);
      // Two commits for epoch 0, both screened against it (each device's entry written) before either
      // is stored: one wins, the other is refused at the epoch check.
      const addCarol = await alice.commit([addOf(await carol.keyPackage())]);
      const addBob = await alice.commit([addOf(await bob.keyPackage())]);
      store.expected = 2;
      const answers = await Promise.all([
        hub.client(alice).submit(g.text, addCarol.commit, addCarol.welcome),
        hub.client(alice).submit(g.text, addBob.commit, addBob.welcome),
      ]);
      expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
      const [won, lost] = answers[0].status === 201 ? [carol, bob] : [bob, carol];
      expect(await store.deviceGroupCount(won.deviceId)).toBe(1);
      expect(await store.deviceGroupCount(lost.deviceId)).toBe(0);
    } finally {
      await hub.delivery.close();
    }
  });

  it("an entry with nothing behind it goes when the device reads", async () => {
    const store = new MemoryDeliveryStore();
    const hub = await startCustomHub({ store });
    try {
      const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
      const g = randomGroupId();
      await alice.startGroup(g.bytes);
      expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
      // Left by an add whose request died before its commit (and before its mark lapsed: then kept).
      await store.beginAdd(bob.deviceId, g.text, "t", 1000);
      expect((await hub.client(bob).inbox()).items).toEqual([]);
      expect(await store.deviceGroupCount(bob.deviceId)).toBe(1);
      await store.endAdd(bob.deviceId, g.text, "t");
      expect((await hub.client(bob).inbox()).items).toEqual([]);
      await waitFor(async () => (await store.deviceGroupCount(bob.deviceId)) === 0);
    } finally {
      await hub.delivery.close();
    }
  });
});

describe("invitations", () => {
  let hub: TestHub;
  beforeAll(async () => {
    // Invitations need DIRECTORY_URL; a sender of another instance is never checked against it, so an
    // address nothing listens on will do.
    hub = await startHub("memory", {
      directory: { url: "http://127.0.0.1:9" } as TestDirectory,
      env: { RATE_INVITATIONS: "2", RATE_WINDOW_SECONDS: "600" },
    });
  });
  afterAll(async () => {
    await hub.close();
  });

  it("one foreign device cannot queue unlimited invitations by naming a new account each time", async () => {
    // One device key (one device id); a self-issued certificate per made-up account of evil.test.
    const sig = await generateSigningKeyPair();
    const now = Math.floor(Date.now() / 1000);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const account = await generateSigningKeyPair();
      const certificate = await signDeviceCertificate(
        {
          identity: `acct:spam${i}@evil.test`,
          accountKey: account.publicKey,
          sigKey: sig.publicKey,
          notBefore: now - 60,
          notAfter: now + 3600,
        },
        account.signKey,
      );
      const signer: DeviceSigner = { certificate, signKey: sig.signKey };
      const client = new HubClient(hub.url, HUB_ORIGIN, signer);
      for (let k = 0; k < 2; k++) {
        const a = await client.invite("alice@a.test", `https://x${i}.evil.test/${"p".repeat(2000)}`, "AAAA");
        statuses.push(a.status);
      }
    }
    const queued = await hub.delivery.context.store.invitationCount("alice@a.test");
    // RATE_INVITATIONS is 2 per window: 24 invitations from one device (≈ 50 KB here) should not all land.
    expect({ queued, limited: statuses.includes(429) }).toMatchObject({ limited: true });
  });
});

describe("request nonces", () => {
  it("one device spending nonces does not lock every other device out (memory nonce store)", async () => {
    // MemoryNonceStore holds 1,000,000 live nonces (11 minutes each), 50,000 per device, and refuses
    // rather than forget one. The same with room for 20 in all and 10 per device, so that the test is quick.
    const hub = await startCustomHub({ nonces: new MemoryNonceStore(Date.now, 20, 10) });
    try {
      const [mallory, alice] = await Promise.all([TestDevice.create("mallory"), TestDevice.create("alice")]);
      for (let i = 0; i < 25; i++) await hub.client(mallory).request("GET", "/v1/groups/AAAA");
      const g = randomGroupId();
      const answer = await hub.client(alice).createGroup(g.text);
      expect(answer.body).not.toMatchObject({ error: "auth_replayed" });
      expect(answer.status).toBe(201);
    } finally {
      await hub.delivery.close();
    }
  });
});

/** One raw HTTP/1.1 exchange (for what fetch will not send: duplicate headers and the like). */
function rawHttp(url: string, request: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(request));
    let text = "";
    socket.on("data", (d) => (text += d.toString("latin1")));
    socket.on("end", () => resolve(text));
    socket.on("error", reject);
  });
}

describe("checked and sound (these pass)", () => {
  let hub: TestHub;
  let alice: TestDevice;
  let g: { text: string; bytes: Uint8Array };
  beforeAll(async () => {
    hub = await startHub("memory");
    alice = await TestDevice.create("alice");
    g = randomGroupId();
    await alice.startGroup(g.bytes);
    expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
  });
  afterAll(async () => {
    await hub.close();
  });

  const closeOf = async (frames: (string | Buffer)[], authFirst: boolean) => {
    const s = authFirst
      ? await StreamClient.open(hub.url, alice.signer)
      : await StreamClient.connect(hub.url);
    if (!authFirst) await s.next("challenge");
    for (const f of frames) s.socket.send(f);
    return (await s.closed).code;
  };

  it("stream: garbage, binary, deeply nested, wrong and oversized frames close with a documented code", async () => {
    const deep = "[".repeat(500_000) + "]".repeat(500_000);
    expect(await closeOf([Buffer.from([1, 2, 3])], false)).toBe(4002);
    expect(await closeOf([deep], false)).toBe(4002);
    expect(await closeOf([JSON.stringify({ type: "auth", authorization: "x".repeat(9000) })], false)).toBe(
      4002,
    );
    expect(
      await closeOf([JSON.stringify({ type: "submit", id: "1", group_id: g.text, message: "" })], false),
    ).toBe(4001);
    expect(await closeOf([Buffer.from("{}")], true)).toBe(4002);
    expect(await closeOf([JSON.stringify({ type: "auth", authorization: "MLS-Device a.b.c.d" })], true)).toBe(
      4002,
    );
    expect(await closeOf([JSON.stringify({ type: "ack", cursor: cursorOf({ "7.0": 1 }) })], true)).toBe(4002);
    expect(await closeOf([JSON.stringify({ type: "ack", cursor: cursorOf({ "1.0": 5 }) })], true)).toBe(4002);
    // Over maxPayload (3 MiB): ws closes with 1009 (not one of 4000–4002, but a clean close).
    expect(await closeOf(["x".repeat(3 * 1024 * 1024 + 10)], true)).toBe(1009);
  });

  it("stream: odd submit frames are refused, not crashed on; a submit racing a close does no harm", async () => {
    const s = await StreamClient.open(hub.url, alice.signer);
    const odd = [
      { id: "\u0000\ud800", message: "AA" },
      { id: "x", message: "" },
      { id: "x", message: toBase64url(privateMessage(g.bytes, 0n, 16)).slice(0, -3) },
      { id: "x", message: toBase64url(privateMessage(new Uint8Array(16), 0n, 16)) },
      { id: "x", message: toBase64url(privateMessage(g.bytes, 2n ** 64n - 1n, 16)) },
      { id: "x", message: toBase64url(privateMessage(g.bytes, 0n, 16)), welcome: "AAAA" },
    ];
    for (const f of odd) {
      const answer = await s.answer((s.send({ type: "submit", group_id: g.text, ...f }), f.id));
      expect(answer.type).toBe("refused");
      expect((answer as { error: string }).error).not.toBe("internal");
    }
    const racing = await StreamClient.open(hub.url, alice.signer);
    for (let i = 0; i < 5; i++) racing.submitFrame(g.text, privateMessage(g.bytes, 0n, 16));
    racing.socket.terminate();
    // The hub goes on: the other stream's next submission is answered as any.
    const after = await s.answer(s.submitFrame(g.text, privateMessage(g.bytes, 0n, 16)));
    expect(after.type).toBe("submitted");
    s.close();
  });

  it("HTTP: odd media types, bodies, queries, paths and Authorization headers are 4xx", async () => {
    const c = hub.client(alice);
    const path = `/v1/groups/${g.text}/messages`;
    const statuses = [
      (await c.request("POST", path, { raw: new Uint8Array(0), contentType: "message/mls" })).status,
      (await c.request("POST", path, { raw: new Uint8Array([0, 1, 0, 2]), contentType: "message/mls" }))
        .status,
      (await c.request("POST", path, { raw: Buffer.from("{}"), contentType: "text/plain" })).status,
      (await c.request("POST", path, { raw: Buffer.from("[[[[[["), contentType: "application/json" })).status,
      (await c.request("POST", path, { json: { message: "A=" } })).status,
      (await c.request("POST", path, { json: { message: "AB" } })).status,
      (await c.request("POST", "/v1/groups", { raw: Buffer.from("\u0000"), contentType: "message/mls" }))
        .status,
      (await c.request("GET", "/v1/inbox?limit=0")).status,
      (await c.request("GET", "/v1/inbox?limit=abc")).status,
      (await c.request("GET", "/v1/inbox?after=")).status,
      (await c.request("GET", "/v1/inbox?after=a&after=b")).status,
      (
        await c.request(
          "GET",
          `/v1/inbox?after=${Buffer.from('{"v":1,"p":{"__proto__":1}}').toString("base64url")}`,
        )
      ).status,
      (await c.request("GET", "/v1/groups/%ZZ")).status,
      (await c.request("GET", "/v1/groups/AAA")).status,
      (await c.request("GET", `/v1/groups/${"A".repeat(101)}`)).status,
      (await c.request("POST", "/v1/inbox/ack", { json: { cursor: cursorOf({ "1.0": 1e9 }) } })).status,
      (await c.request("POST", "/v1/inbox/ack", { json: { cursor: cursorOf({ a: 1 }) } })).status,
      (
        await c.request("POST", `/v1/groups/${g.text}/commit-rejected`, {
          json: { epoch: 1e300, commit_hash: "A".repeat(43), reason: "x" },
        })
      ).status,
      (
        await c.request("POST", "/v1/invitations", {
          json: { acct: "bob@a.test", hub: "x", group_id: "AAAA" },
        })
      ).status,
      (await c.request("GET", "/v1/inbox", { authorization: "MLS-Device " + "A".repeat(9000) })).status,
      (await c.request("GET", "/v1/inbox", { authorization: "MLS-Device !!.1.2.3" })).status,
      (await c.request("GET", "/v1/inbox", { authorization: "Bearer x" })).status,
    ];
    for (const [i, st] of statuses.entries()) {
      expect(st, `request #${i}`).toBeGreaterThanOrEqual(400);
      expect(st).toBeLessThan(500);
    }
    // The same signed request twice: the second is a replay.
    const signed = await c.request("GET", "/v1/inbox");
    expect(signed.status).toBe(200);
    expect((await c.request("GET", "/v1/inbox", { authorization: c.lastAuthorization })).status).toBe(401);
    // Two Authorization headers (Node keeps the first): 401, not a crash.
    const auth = await signRequest(alice.signer, {
      method: "GET",
      origin: HUB_ORIGIN,
      pathAndQuery: "/v1/inbox",
    });
    const dup = await rawHttp(
      hub.url,
      `GET /v1/inbox HTTP/1.1\r\nHost: x\r\nAuthorization: garbage\r\nAuthorization: ${auth}\r\nConnection: close\r\n\r\n`,
    );
    expect(dup).toMatch(/^HTTP\/1\.1 4\d\d/);
    // A WebSocket upgrade to a route that is not the stream.
    const ws = new WebSocket(`${hub.url.replace(/^http/, "ws")}/v1/inbox`);
    const outcome = await new Promise<string>((r) => {
      ws.on("error", (e) => r(`error ${e.message}`));
      ws.on("unexpected-response", (_q, res) => r(`status ${res.statusCode}`));
      ws.on("open", () => r("open"));
    });
    expect(outcome).not.toBe("open");
    ws.terminate();
  });
});

describe("retention of fork records", () => {
  it("fork records go with their commits: GET /v1/groups/:id does not grow with every epoch forever", async () => {
    const clock = manualClock();
    const hub = await startHub("memory", { now: clock.now });
    try {
      const alice = await TestDevice.create("alice");
      const g = randomGroupId();
      await alice.startGroup(g.bytes);
      expect((await hub.client(alice).createGroup(g.text)).status).toBe(201);
      // A member commits and reports every one of its own commits as a fork: one record per epoch.
      for (let epoch = 0; epoch < 6; epoch++) {
        const c = await alice.commit();
        expect((await hub.client(alice).submit(g.text, c.commit)).status).toBe(201);
        c.apply();
        const fork = await hub.client(alice).request("POST", `/v1/groups/${g.text}/commit-rejected`, {
          json: { epoch, commit_hash: toBase64url(sha256(c.commit)), reason: "spam" },
        });
        expect(fork.status).toBe(201);
      }
      await drain(alice, hub.client(alice));
      // Everything is acknowledged, and then older than RETENTION_SECONDS (14 days).
      clock.advance(15 * 24 * 3600 * 1000);
      await hub.delivery.sweep();
      const status = await hub.client(alice).request("GET", `/v1/groups/${g.text}`);
      expect(status.status).toBe(200);
      expect(status.body.retained_after).toBe(status.body.seq);
      // The commits and the `forked` notices are gone; the fork records should not outlive them.
      expect(status.body.forks.length).toBeLessThanOrEqual(3);
    } finally {
      await hub.close();
    }
  });
});
