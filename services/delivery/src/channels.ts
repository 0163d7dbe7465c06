import type { Topic } from "./notifier.js";

/**
 * Redis pub/sub channels between replicas. Topics (a group, a device, an account) are hashed onto a fixed
 * number of shard channels, so a replica holding 10,000 sockets subscribes to at most SHARDS channels (not
 * one per device or group), and an event costs one PUBLISH per shard it concerns. A replica receives the
 * events of every topic sharing a shard with one it watches and drops those it holds no socket for.
 */
export const SHARDS = 256;

/** FNV-1a, 32 bits: cheap, stable across processes and versions. */
export function shardOf(topic: Topic): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < topic.length; i++) {
    h ^= topic.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % SHARDS;
}

export function shardChannel(prefix: string, shard: number): string {
  return `${prefix}ev:${shard}`;
}

/** The distinct channels of these topics. */
export function channelsOf(prefix: string, topics: readonly Topic[]): string[] {
  return [...new Set(topics.map((t) => shardChannel(prefix, shardOf(t))))];
}
