import type { Logger, Redis } from "@mastodon-mls/service-kit";
import { channelsOf, shardChannel, shardOf } from "./channels.js";
import { topicsOf, type InboxEvent, type Notifier, type Topic } from "./notifier.js";

/**
 * Inbox events between replicas over Redis pub/sub (DESIGN §6, scale-out), on the shard channels of
 * channels.ts. Log entries are announced by the store's own scripts (RedisDeliveryStore `announce`), in
 * the step that appends them; `publish` carries the rest (invitations, wake-ups).
 *
 * Pub/sub is at-most-once: while the subscriber connection is down, events are lost. When it is back,
 * listeners get a `resync` event and every stream re-reads its inbox from the store.
 */
export class RedisNotifier implements Notifier {
  private readonly listeners = new Set<(event: InboxEvent) => void>();
  private readonly topics = new Map<Topic, number>();
  /** Channel → how many watched topics hash to it, and its SUBSCRIBE. */
  private readonly channels = new Map<string, { count: number; subscribed: Promise<unknown> }>();
  private connectedOnce = false;

  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    private readonly prefix: string,
    private readonly log: Logger,
  ) {
    sub.on("message", (_channel: string, payload: string) => this.deliver(payload));
    // ioredis subscribes again by itself after a reconnect (autoResubscribe); what was published
    // meanwhile is gone, so every stream re-reads.
    sub.on("ready", () => {
      if (this.connectedOnce) this.emit({ kind: "resync" });
      this.connectedOnce = true;
    });
  }

  publish(event: InboxEvent): void {
    const payload = JSON.stringify(event);
    for (const channel of channelsOf(this.prefix, topicsOf(event))) {
      this.pub.publish(channel, payload).catch((e: unknown) => {
        // The store holds the data; a stream misses only the push and gets it on its next read.
        this.log.warn({ err: e instanceof Error ? e.message : String(e) }, "publish failed");
      });
    }
  }

  subscribe(listener: (event: InboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async watch(topic: Topic): Promise<void> {
    const n = (this.topics.get(topic) ?? 0) + 1;
    this.topics.set(topic, n);
    const name = shardChannel(this.prefix, shardOf(topic));
    const channel = this.channels.get(name);
    if (n > 1 && channel) {
      await channel.subscribed;
      return;
    }
    if (channel) {
      channel.count++;
      await channel.subscribed;
      return;
    }
    const subscribed = this.sub.subscribe(name);
    this.channels.set(name, { count: 1, subscribed });
    await subscribed;
  }

  unwatch(topic: Topic): void {
    const n = (this.topics.get(topic) ?? 0) - 1;
    if (n > 0) {
      this.topics.set(topic, n);
      return;
    }
    if (n < 0) return;
    this.topics.delete(topic);
    const name = shardChannel(this.prefix, shardOf(topic));
    const channel = this.channels.get(name);
    if (!channel || --channel.count > 0) return;
    this.channels.delete(name);
    this.sub.unsubscribe(name).catch(() => {});
  }

  /** Shard channels subscribed to now. */
  get subscriptions(): number {
    return this.channels.size;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.sub.quit().catch(() => this.sub.disconnect());
  }

  private deliver(payload: string): void {
    let event: InboxEvent;
    try {
      event = JSON.parse(payload) as InboxEvent;
    } catch {
      return;
    }
    if (event.kind === "group" || event.kind === "devices" || event.kind === "account") this.emit(event);
  }

  private emit(event: InboxEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
