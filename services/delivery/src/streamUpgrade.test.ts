import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHub, type TestHub } from "./testing/hub.js";

// A malformed WebSocket upgrade was answered by ws itself, in text/html; every other answer of the hub is
// the error catalogue's JSON.

describe("stream upgrade requests (memory store)", () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub("memory");
  });
  afterAll(async () => {
    await hub.close();
  });

  const answer = (headers: string) =>
    new Promise<string>((resolve) => {
      const socket = connect(Number(new URL(hub.url).port), "127.0.0.1");
      let got = "";
      socket.on("data", (d) => (got += d.toString("latin1")));
      socket.on("close", () => resolve(got));
      socket.on("error", () => resolve(got));
      socket.write(
        `GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${headers}\r\n`,
      );
      setTimeout(() => socket.destroy(), 3000).unref();
    });

  it("answers a malformed upgrade with 400 bad_request in the catalogue's JSON", async () => {
    for (const headers of [
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n",
      "Sec-WebSocket-Version: 13\r\n",
      "Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ]) {
      const text = await answer(headers);
      expect(text, headers).toMatch(/^HTTP\/1\.1 400 /);
      expect(text).toMatch(/content-type: application\/json/i);
      expect(JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4))).toMatchObject({ error: "bad_request" });
    }
  });
});
