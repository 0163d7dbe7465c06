import net from "node:net";
import { describe, expect, it } from "vitest";
import { startHub } from "./testing/hub.js";

// docs/operations.md "Shutdown": on SIGTERM the hub closes its WebSockets (4000) and exits 0, within the
// systemd unit's TimeoutStopSec (30 s). A peer that never answers the close frame (a client gone without
// a FIN, a stalled network) must not hold the shutdown past Fastify's 10 s for close hooks, which then
// fails (exit 1, Redis left unclosed), nor past ws's own 30 s default.

/** Opens /v1/stream by hand and then reads nothing and answers nothing: not even the close frame. */
function deadPeer(url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () =>
      socket.write(
        "GET /v1/stream HTTP/1.1\r\nHost: hub.a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    socket.once("data", () => resolve(socket));
    socket.on("error", reject);
  });
}

describe("shutdown", () => {
  it("closes within seconds even when a peer never answers the close frame", async () => {
    const hub = await startHub("memory");
    const peer = await deadPeer(hub.url);
    try {
      const started = Date.now();
      await hub.close();
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      peer.destroy();
    }
  }, 45_000);
});
