import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  MemoryNonceStore,
  generateSigningKeyPair,
  signDeviceCertificate,
  verifyRequest,
  type DeviceSigner,
} from "@mastodon-mls/bridge";
import { toBase64url, type StreamClientFrame } from "@mastodon-mls/protocol";
import { afterEach, beforeEach, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { InboxStream, MAX_UNPROCESSED_BATCHES } from "./inboxStream.js";

// A hub pushing `items` frames faster than the device processes them (found by an audit): every frame
// was read, parsed and queued, the socket never paused, so memory grew with whatever the hub sent (150
// frames of 1 MiB read while one batch was processed). Past MAX_UNPROCESSED_BATCHES the socket is no
// longer read, so TCP holds the hub back; a submission still gets its answer.

const FRAMES = 150;
const PAYLOAD = toBase64url(new Uint8Array(randomBytes(1024 * 1024 - 64)));
let http: Server;
let wss: WebSocketServer;
let base: string;
let signer: DeviceSigner;
let flushed = 0;
let failed = 0;

beforeEach(async () => {
  flushed = 0;
  failed = 0;
  http = createServer();
  wss = new WebSocketServer({ server: http, path: "/v1/stream" });
  const nonces = new MemoryNonceStore();
  wss.on("connection", (ws: WebSocket) => {
    const challenge = new Uint8Array(randomBytes(32));
    ws.send(JSON.stringify({ type: "challenge", challenge: toBase64url(challenge) }));
    ws.on("message", (data: Buffer) => {
      const frame = JSON.parse(data.toString("utf8")) as StreamClientFrame;
      if (frame.type === "submit") {
        ws.send(JSON.stringify({ type: "submitted", id: frame.id, seq: 1, epoch: 1 }));
        return;
      }
      if (frame.type !== "auth") return;
      void verifyRequest(
        frame.authorization,
        { method: "GET", origin: base, pathAndQuery: "/v1/stream", body: challenge },
        { nonces },
      ).then(() => {
        ws.send(JSON.stringify({ type: "ready", cursor: "" }));
        for (let i = 1; i <= FRAMES; i++) {
          const item = {
            kind: "message",
            group_id: "AAAAAAAAAAAAAAAAAAAAAA",
            seq: i,
            epoch: 1,
            sender: "A".repeat(43),
            message: PAYLOAD,
            cursor: `c${i}`,
          };
          ws.send(JSON.stringify({ type: "items", items: [item], cursor: `c${i}` }), (err) => {
            if (err === undefined || err === null) flushed++;
            else failed++;
          });
        }
      });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const account = await generateSigningKeyPair();
  const dev = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity: "acct:alice@a.test",
      accountKey: account.publicKey,
      sigKey: dev.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    account.signKey,
  );
  signer = { certificate, signKey: dev.signKey };
});
afterEach(async () => {
  for (const c of wss.clients) c.terminate();
  wss.close();
  await new Promise<void>((resolve) => http.close(() => resolve()));
});

it(
  "a hub pushing batches faster than the device processes them is held back, and a submission is still answered",
  { timeout: 30_000 },
  async () => {
    let received = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const stream = new InboxStream({
      baseUrl: base,
      signer,
      after: () => undefined,
      reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
      onStatus: (s) => {
        if (s.kind === "ready") ready();
      },
      onItems: async () => {
        received++;
        await gate; // a device busy with its first batch
      },
    });
    stream.start();
    await isReady;
    // Wait until the hub has nothing more it can write: its writes stall once the device stops reading.
    let last = -1;
    while (flushed + failed !== last) {
      last = flushed + failed;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(received).toBe(1);
    expect(flushed).toBeLessThan(MAX_UNPROCESSED_BATCHES + 24);
    // A submission's answer is read even so.
    await expect(stream.submit("AAAAAAAAAAAAAAAAAAAAAA", new Uint8Array([1, 2, 3]))).resolves.toMatchObject({
      seq: 1,
    });
    // Once the device gets through its batches, the rest comes.
    release();
    while (received < FRAMES) await new Promise((r) => setTimeout(r, 50));
    stream.close();
    expect(received).toBe(FRAMES);
  },
);
