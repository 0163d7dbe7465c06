import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Socket } from "node:net";
import { MemoryDeliveryStore } from "./store/memory.js";
import { HubClient } from "./testing/client.js";
import { privateMessage } from "./testing/craft.js";
import { randomGroupId } from "./testing/flow.js";
import { HUB_ORIGIN, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// Submit frames wait in a queue of 64 per stream, each holding its message (and Welcome) as text: up to
// 2.7 MB a frame, so 170 MB for one stream of one connection, however little the client has to send
// for an HTTP request of the same size. The queue is bounded in bytes as well.

/** The memory store, whose appends wait at a gate while it is closed. */
class GatedStore extends MemoryDeliveryStore {
  gate: Promise<void> | undefined;
  override async append(...args: Parameters<MemoryDeliveryStore["append"]>) {
    await this.gate;
    return super.append(...args);
  }
}

describe("stream submit queue (memory store)", () => {
  const store = new GatedStore();
  let hub: TestHub;
  let url: string;
  beforeAll(async () => {
    hub = await startHub("memory", { limits: { streamSubmitQueueBytes: 300 * 1024 }, memoryStore: store });
    url = hub.url;
  });
  afterAll(() => hub.close());

  it("refuses submit frames past the queue's bytes with rate_limited, in order, and takes the rest", async () => {
    const alice = await TestDevice.create("alice");
    const g = randomGroupId();
    expect((await new HubClient(url, HUB_ORIGIN, alice.signer).createGroup(g.text)).status).toBe(201);
    const stream = await StreamClient.open(url, alice.signer);
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    // Five frames of about 133 KiB of text each, in one write: two fit in 300 KiB with the one in progress.
    const raw = (stream.socket as unknown as { _socket: Socket })._socket;
    raw.cork();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(stream.submitFrame(g.text, privateMessage(g.bytes, 0n, 100 * 1024)));
    raw.uncork();
    await new Promise((r) => setTimeout(r, 300));
    store.gate = undefined;
    open();
    const answers = await Promise.all(ids.map((id) => stream.answer(id)));
    expect(answers.map((a) => (a.type === "refused" ? a.error : a.type))).toEqual([
      "submitted",
      "submitted",
      "rate_limited",
      "rate_limited",
      "rate_limited",
    ]);
    // A single frame larger than the queue's bytes is taken when nothing waits.
    const big = await stream.submit(g.text, privateMessage(g.bytes, 0n, 400 * 1024));
    expect(big.type).toBe("submitted");
    stream.close();
  });
});
