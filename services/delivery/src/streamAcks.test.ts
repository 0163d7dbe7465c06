import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { MemoryDeliveryStore } from "./store/memory.js";
import { HubClient } from "./testing/client.js";
import { privateMessage } from "./testing/craft.js";
import { randomGroupId } from "./testing/flow.js";
import { HUB_ORIGIN, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// `ack` frames cost the client nothing (no signature, a few bytes each) and each one is store work. They
// were all started at once, however many arrived: a client could put any number of acknowledgements in
// flight on one stream, each holding its frame and its Redis commands in memory until Redis answered.

/** The memory store, whose cursor writes take a while (a Redis round trip) and count how many overlap. */
class SlowCursorStore extends MemoryDeliveryStore {
  inFlight = 0;
  maxInFlight = 0;
  writes = 0;
  override async advanceCursor(device: string, positions: ReadonlyMap<string, number>): Promise<void> {
    this.inFlight++;
    this.writes++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 5));
      await super.advanceCursor(device, positions);
    } finally {
      this.inFlight--;
    }
  }
}

describe("stream acknowledgements (memory store)", () => {
  const store = new SlowCursorStore();
  let hub: TestHub;
  let url: string;
  beforeAll(async () => {
    hub = await startHub("memory", { memoryStore: store });
    url = hub.url;
  });
  afterAll(() => hub.close());

  it("a flood of ack frames keeps one acknowledgement in flight and loses none of them", async () => {
    const alice = await TestDevice.create("alice");
    const client = new HubClient(url, HUB_ORIGIN, alice.signer);
    const g = randomGroupId();
    expect((await client.createGroup(g.text)).status).toBe(201);
    for (let i = 0; i < 20; i++) {
      expect((await client.submit(g.text, privateMessage(g.bytes, 0n, 32))).status).toBe(201);
    }
    const stream = await StreamClient.open(url, alice.signer);
    const items = await stream.items(20);
    const last = items[items.length - 1]!;
    // Each item's cursor, 50 times over, the highest last: 1,000 frames in one go.
    const before = store.writes;
    for (let round = 0; round < 50; round++) {
      for (const item of items) stream.send({ type: "ack", cursor: item.cursor });
    }
    stream.send({ type: "ack", cursor: last.cursor });
    await waitFor(async () => {
      const positions = await store.cursor(alice.deviceId);
      return [...positions.values()].includes("seq" in last ? last.seq : -1);
    });
    await waitFor(() => store.inFlight === 0);
    expect(store.maxInFlight).toBe(1);
    // Acknowledgements that arrived while one was in flight were taken together.
    expect(store.writes - before).toBeLessThan(100);
    // The stream is still open and serves.
    expect((await client.submit(g.text, privateMessage(g.bytes, 0n, 32))).status).toBe(201);
    expect((await stream.items(1))[0]).toMatchObject({ kind: "message" });
    stream.close();
  });
});
