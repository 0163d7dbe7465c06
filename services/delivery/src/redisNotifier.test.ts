import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { connectRedis, silentLogger, type Redis } from "@mastodon-mls/service-kit";
import { SHARDS } from "./channels.js";
import { deviceTopic, groupTopic, type InboxEvent } from "./notifier.js";
import { RedisNotifier } from "./redisNotifier.js";

const redis = useRedis();
const connections: Redis[] = [];
const connect = () => {
  const c = connectRedis(redis().url, silentLogger(), { maxRetriesPerRequest: null });
  connections.push(c);
  return c;
};

afterAll(() => {
  for (const c of connections) c.disconnect();
});

describe("RedisNotifier", () => {
  it("subscribes to at most one channel per shard however many topics it watches", async () => {
    const notifier = new RedisNotifier(connect(), connect(), redis().keyPrefix, silentLogger());
    const topics = Array.from({ length: 10_000 }, (_, i) => deviceTopic(`device-${i}`));
    await Promise.all(topics.map((t) => notifier.watch(t)));
    expect(notifier.subscriptions).toBe(SHARDS);
    await notifier.watch(topics[0]!);
    for (const t of topics) notifier.unwatch(t);
    expect(notifier.subscriptions).toBe(1);
    notifier.unwatch(topics[0]!);
    expect(notifier.subscriptions).toBe(0);
    await notifier.close();
  });

  it("carries events between replicas for the topics watched, and asks for a re-read after a reconnect", async () => {
    const prefix = `${redis().keyPrefix}n2:`;
    const pub = connect();
    const sub = connect();
    const sender = new RedisNotifier(pub, connect(), prefix, silentLogger());
    const receiver = new RedisNotifier(connect(), sub, prefix, silentLogger());
    const got: InboxEvent[] = [];
    receiver.subscribe((e) => got.push(e));
    await waitFor(() => sub.status === "ready");
    await receiver.watch(groupTopic("g1"));
    const event: InboxEvent = {
      kind: "group",
      groupId: "g1",
      seq: 7,
      epoch: 1,
      sender: "d",
      at: 5,
      message: "AA",
    };
    sender.publish({ kind: "account", acct: "nobody-watches@a.test" });
    sender.publish(event);
    await waitFor(() => got.some((e) => e.kind === "group"));
    expect(got.filter((e) => e.kind !== "account")).toEqual([event]);
    // The subscriber connection drops: what was published meanwhile is lost, so listeners re-read.
    sub.disconnect(true);
    await waitFor(() => got.some((e) => e.kind === "resync"), { timeoutMs: 10_000 });
    await sender.close();
    await receiver.close();
  });
});
