import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { fromBase64url, type InboxItem } from "@mastodon-mls/protocol";
import { drain, randomGroupId } from "./testing/flow.js";
import { startHub, type TestHub } from "./testing/hub.js";
import { TestDevice, addOf } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// An offline device catches up on 1,000 messages in order, nothing missing or duplicated: real ts-mls
// application messages sent on alice's stream, read by bob partly by polling, then on a stream of his
// own, and every one decrypted by his real ts-mls state.

const N = 1000;

const redis = useRedis();
let hub: TestHub;
beforeAll(async () => {
  hub = await startHub("redis", { redis: redis() });
});
afterAll(async () => {
  await hub.close();
});

describe("catching up", () => {
  it(`brings a device offline for ${N} messages up to date, in order, nothing missing or repeated`, async () => {
    const [alice, bob] = await Promise.all([TestDevice.create("alice"), TestDevice.create("bob")]);
    const id = randomGroupId();
    const g = id.text;
    await alice.startGroup(id.bytes);
    await hub.client(alice).createGroup(g);
    const add = await alice.commit([addOf(await bob.keyPackage())]);
    expect((await hub.client(alice).submit(g, add.commit, add.welcome)).status).toBe(201);
    add.apply();
    // bob joins, then goes offline.
    await drain(bob, hub.client(bob));

    const texts = Array.from({ length: N }, (_, i) => `message ${i}`);
    const sender = await StreamClient.open(hub.url, alice.signer);
    // At most 32 waiting for their answers, as a client that reads them keeps it (the hub refuses a
    // submit frame beyond 64 waiting: one on a loaded machine could fill that with no window).
    const WINDOW = 32;
    const answering: Promise<Awaited<ReturnType<typeof sender.answer>>>[] = [];
    for (const [i, text] of texts.entries()) {
      if (i >= WINDOW) await answering[i - WINDOW];
      answering.push(sender.answer(sender.submitFrame(g, await alice.encrypt(text)), 60_000));
    }
    const answers = await Promise.all(answering);
    expect(answers.map((a) => (a.type === "submitted" ? a.seq : a.error))).toEqual(
      texts.map((_, i) => i + 2),
    );
    sender.close();

    // Back online: the first 400 by polling (acknowledged page by page), the rest pushed on a stream.
    const client = hub.client(bob);
    const received: InboxItem[] = [];
    while (received.length < 400) {
      const page = await client.inbox(undefined, 100);
      received.push(...page.items);
      expect((await client.ack(page.cursor)).status).toBe(200);
    }
    const stream = await StreamClient.open(hub.url, bob.signer);
    received.push(...(await stream.items(N - 400, 30_000)));
    stream.close();

    expect(received.map((i) => ("seq" in i ? i.seq : -1))).toEqual(texts.map((_, i) => i + 2));
    const read: (string | undefined)[] = [];
    for (const item of received)
      read.push(await bob.receive(fromBase64url((item as { message: string }).message)));
    expect(read).toEqual(texts);
    expect((await client.inbox(received.at(-1)!.cursor)).items).toEqual([]);
  });
});
