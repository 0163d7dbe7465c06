import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { randomGroupId } from "./testing/flow.js";
import { startHub, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// A stream whose peer vanished without a close (a phone that lost its network, a NAT that forgot the
// mapping) is only noticed if the hub sends something; an idle stream has nothing to send. Without pings
// such a session, its subscriptions and its socket stayed for ever.

describe("stream heartbeat (memory store)", () => {
  let hub: TestHub;
  let dave: TestDevice;
  beforeAll(async () => {
    // A request must arrive within 300 ms: a WebSocket, once upgraded, is not a request and stays open.
    hub = await startHub("memory", {
      limits: { streamPingMs: 150 },
      server: { requestTimeoutMs: 300, timeoutCheckMs: 50 },
    });
    dave = await TestDevice.create("dave");
    const id = randomGroupId();
    await dave.startGroup(id.bytes);
    expect((await hub.client(dave).createGroup(id.text)).status).toBe(201);
  });
  afterAll(async () => {
    await hub.close();
  });

  const openSockets = async () => (await hub.delivery.context.metrics.sockets.get()).values[0]?.value ?? 0;

  it("pings an idle stream, which stays open while its client answers", async () => {
    const stream = await StreamClient.open(hub.url, dave.signer);
    let pings = 0;
    stream.socket.on("ping", () => pings++);
    await new Promise((r) => setTimeout(r, 1000));
    expect(pings).toBeGreaterThanOrEqual(3);
    expect(stream.socket.readyState).toBe(stream.socket.OPEN);
    stream.close();
    await stream.closed;
  });

  it("drops a stream whose client stopped answering pings, and forgets its session", async () => {
    const before = await openSockets();
    const stream = await StreamClient.open(hub.url, dave.signer);
    expect(await openSockets()).toBe(before + 1);
    // The client's end stops reading: pings go unanswered, as from a peer that is gone.
    const raw = (stream.socket as unknown as { _socket: { pause(): void } })._socket;
    raw.pause();
    await waitFor(async () => (await openSockets()) === before, { timeoutMs: 3000 });
    const closed = await hub.delivery.context.metrics.streamsClosed.get();
    expect(closed.values.find((v) => v.labels.code === "1006")?.value).toBe(1);
  });
});

describe("pings from the client (memory store)", () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub("memory");
  });
  afterAll(async () => {
    await hub.close();
  });

  // Checked and sound: ws answers each ping with a pong by itself, and cuts off a peer with too many of
  // those unsent (maxPendingAutoPongs), before they could pile up in memory. Kept as a test of that limit.
  it("a client that pings and never reads the pongs is cut off, not buffered without end", async () => {
    const erin = await TestDevice.create("erin");
    const stream = await StreamClient.open(hub.url, erin.signer);
    const openSockets = async () => (await hub.delivery.context.metrics.sockets.get()).values[0]?.value ?? 0;
    expect(await openSockets()).toBe(1);
    const raw = (stream.socket as unknown as { _socket: { pause(): void } })._socket;
    raw.pause();
    const payload = Buffer.alloc(125, 1);
    for (let i = 0; i < 200_000 && (await openSockets()) > 0; i++) {
      stream.socket.ping(payload);
      if (i % 5000 === 4999) await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor(async () => (await openSockets()) === 0, { timeoutMs: 5000 });
    stream.socket.terminate();
  }, 60_000);
});
