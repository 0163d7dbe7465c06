import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectRedis, redisReady } from "./redis.js";
import { silentLogger } from "./logger.js";

// GET /readyz answers from redisReady: a load balancer's probe must get its 503 while Redis does not
// answer, not wait for as long as the client keeps the command queued (with a Redis that accepts
// connections and never replies, forever).

let silent: net.Server;
let url: string;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  silent = net.createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  url = `redis://127.0.0.1:${(silent.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
});

describe("redisReady", () => {
  it("is false within its deadline when Redis does not answer", async () => {
    const redis = connectRedis(url, silentLogger());
    try {
      const started = Date.now();
      expect(await redisReady(redis, 300)).toBe(false);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      redis.disconnect();
    }
  }, 10_000);
});
