import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from "node:net";
import {
  MemoryNonceStore,
  generateSigningKeyPair,
  signDeviceCertificate,
  verifyRequest,
  type DeviceSigner,
} from "@mastodon-mls/bridge";
import { STREAM_CLOSE, toBase64url, type InboxItem, type StreamClientFrame } from "@mastodon-mls/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { InboxStream, MAX_UNPROCESSED_BATCHES, type StreamStatus } from "./inboxStream.js";

// A minimal hub side of /v1/stream: challenge, signature check, ready, items, acks; it can drop a socket.

let http: Server;
let wss: WebSocketServer;
let base: string;
let signer: DeviceSigner;
let deviceId: string;
const acks: string[] = [];
const afters: (string | undefined)[] = [];
let onReady: (ws: WebSocket, n: number) => void = () => undefined;
/** The hub's side of `submit` frames: what it answers to each (nothing: it never answers). */
let onSubmit: (ws: WebSocket, frame: Extract<StreamClientFrame, { type: "submit" }>) => void = () =>
  undefined;
/** An `after` the hub answers with invalid_cursor (as for a cursor ahead of its inbox). */
let refusedAfter: string | undefined;

function message(seq: number): InboxItem {
  return { kind: "removed", group_id: "AAAAAAAAAAAAAAAAAAAAAA", seq, cursor: `c${seq}` };
}

beforeEach(async () => {
  refusedAfter = undefined;
  onSubmit = () => undefined;
  onReady = () => undefined;
  acks.length = 0;
  afters.length = 0;
  http = createServer();
  wss = new WebSocketServer({ server: http, path: "/v1/stream" });
  const nonces = new MemoryNonceStore();
  let connections = 0;
  wss.on("connection", (ws) => {
    const challenge = new Uint8Array(randomBytes(32));
    ws.send(JSON.stringify({ type: "challenge", challenge: toBase64url(challenge) }));
    ws.on("message", (data: Buffer) => {
      const frame = JSON.parse(data.toString("utf8")) as StreamClientFrame;
      if (frame.type === "ack") {
        acks.push(frame.cursor);
        return;
      }
      if (frame.type === "submit") {
        onSubmit(ws, frame);
        return;
      }
      if (frame.type !== "auth") return;
      verifyRequest(
        frame.authorization,
        { method: "GET", origin: base, pathAndQuery: "/v1/stream", body: challenge },
        { nonces },
      )
        .then((cert) => {
          deviceId = cert.deviceIdText;
          afters.push(frame.after);
          if (frame.after !== undefined && frame.after === refusedAfter) {
            ws.send(
              JSON.stringify({ type: "error", error: "invalid_cursor", message: "ahead of the inbox" }),
            );
            ws.close(STREAM_CLOSE.badFrame, "invalid_cursor");
            return;
          }
          ws.send(JSON.stringify({ type: "ready", cursor: frame.after ?? "" }));
          onReady(ws, ++connections);
        })
        .catch(() => ws.close(STREAM_CLOSE.authFailed));
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

describe("InboxStream", () => {
  it("authenticates with the signed challenge, processes pushed batches in order, acks each, and resumes after a drop from the last durable cursor", async () => {
    let durable: string | undefined;
    const seen: number[] = [];
    const statuses: StreamStatus["kind"][] = [];
    onReady = (ws, n) => {
      if (n === 1) {
        ws.send(JSON.stringify({ type: "items", items: [message(1), message(2)], cursor: "p2" }));
        ws.send(JSON.stringify({ type: "items", items: [message(3)], cursor: "p3" }));
      } else {
        ws.send(JSON.stringify({ type: "items", items: [message(4)], cursor: "p4" }));
      }
    };
    const done = new Promise<void>((resolve, reject) => {
      const stream = new InboxStream({
        baseUrl: base,
        signer,
        after: () => durable,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        onStatus: (s) => statuses.push(s.kind),
        onItems: async (items, cursor) => {
          seen.push(...items.map((i) => ("seq" in i ? i.seq : -1)));
          durable = cursor;
          if (cursor === "p3") {
            // The hub goes away after the second batch: the stream must come back after "p3".
            setImmediate(() => {
              for (const c of wss.clients) c.close(STREAM_CLOSE.resume, "bye");
            });
          }
          if (cursor === "p4") {
            stream.close();
            resolve();
          }
        },
      });
      stream.start();
      setTimeout(() => reject(new Error("stream did not finish")), 10_000).unref();
    });
    await done;
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(afters).toEqual([undefined, "p3"]);
    expect(acks.slice(0, 2)).toEqual(["p2", "p3"]);
    expect(statuses).toEqual(["ready", "disconnected", "ready", "closed"]);
    expect(deviceId).toHaveLength(43);
  });

  it("a cursor the hub refuses is handed to onCursorRefused before the next attempt, which uses what it left", async () => {
    let durable: string | undefined = "stale";
    refusedAfter = "stale";
    const refusals: string[] = [];
    const statuses: StreamStatus["kind"][] = [];
    await new Promise<void>((resolve) => {
      const stream = new InboxStream({
        baseUrl: base,
        signer,
        after: () => durable,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        onCursorRefused: async () => {
          refusals.push(durable ?? "none");
          durable = undefined; // as the HTTP read does when the hub no longer knows a cursor
        },
        onStatus: (s) => {
          statuses.push(s.kind);
          if (s.kind === "ready") {
            stream.close();
            resolve();
          }
        },
        onItems: async () => undefined,
      });
      stream.start();
    });
    expect(refusals).toEqual(["stale"]);
    expect(afters).toEqual(["stale", undefined]);
    expect(statuses).toEqual(["disconnected", "ready", "closed"]);
  });

  it("NET-7: a hub another party named, whose name resolves to this machine, is never connected to", async () => {
    let connections = 0;
    http.on("connection", () => connections++);
    const port = new URL(base).port;
    const status = await new Promise<StreamStatus>((resolve) => {
      const stream = new InboxStream({
        baseUrl: `http://hub.evil.example:${port}`,
        reach: { publicOnly: async () => [{ address: "127.0.0.1", family: 4 }] },
        signer,
        after: () => undefined,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        onStatus: (s) => {
          if (s.kind === "closed") return;
          resolve(s);
          stream.close();
        },
        onItems: async () => undefined,
      });
      stream.start();
    });
    expect(status).toMatchObject({
      kind: "disconnected",
      reason: expect.stringMatching(/hub\.evil\.example resolves to 127\.0\.0\.1, a loopback address/),
    });
    expect(connections).toBe(0);
  });

  it("NET-7: a hub another party named at a loopback IP literal is never connected to either (no lookup is asked for a literal)", async () => {
    // ServiceHttp checks literals itself (refusedLiteral); the stream did not, so a hub remembered before
    // literals were refused on arrival (older versions, a run on a development map) was connected to.
    let connections = 0;
    http.on("connection", () => connections++);
    const port = new URL(base).port;
    let asked = 0;
    const statuses: StreamStatus[] = [];
    const stream = new InboxStream({
      baseUrl: `http://127.0.0.1:${port}`,
      reach: {
        publicOnly: async () => {
          asked++;
          return [{ address: "93.184.216.34", family: 4 }];
        },
      },
      signer,
      after: () => undefined,
      reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
      onStatus: (s) => statuses.push(s),
      onItems: async () => undefined,
    });
    stream.start();
    // Two attempts: each is reported, and the stream goes on trying (names and addresses may change).
    await until(
      () =>
        statuses.some((s) => s.kind === "ready") ||
        statuses.filter((s) => s.kind === "disconnected").length >= 2,
    );
    stream.close();
    expect(statuses.some((s) => s.kind === "ready")).toBe(false);
    expect(connections).toBe(0);
    expect(statuses[0]).toMatchObject({
      kind: "disconnected",
      reason: expect.stringMatching(/127\.0\.0\.1 is a loopback address/),
      failures: 1,
    });
    expect(statuses[1]).toMatchObject({ kind: "disconnected", failures: 2 });
    expect(asked).toBe(0);
  });

  it("drops a connection that never gets ready (no upgrade, or no challenge) and tries again", async () => {
    // One server takes TCP connections and never answers; the other upgrades and then says nothing.
    const silentTcp = createNetServer(() => undefined);
    const silentHttp = createServer();
    const silentWs = new WebSocketServer({ server: silentHttp, path: "/v1/stream" });
    const listen = (srv: NetServer) =>
      new Promise<string>((resolve) =>
        srv.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`)),
      );
    try {
      for (const url of [await listen(silentTcp), await listen(silentHttp)]) {
        const statuses: StreamStatus[] = [];
        await new Promise<void>((resolve) => {
          const stream = new InboxStream({
            baseUrl: url,
            signer,
            after: () => undefined,
            reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
            readyTimeoutMs: 100,
            onStatus: (s) => {
              if (s.kind === "closed") return;
              statuses.push(s);
              // Dropped once and tried again: dropped again.
              if (statuses.length === 2) {
                stream.close();
                resolve();
              }
            },
            onItems: async () => undefined,
          });
          stream.start();
        });
        expect(statuses, url).toEqual([
          {
            kind: "disconnected",
            reason: expect.stringMatching(/did not get the stream ready within 100 ms/),
            failures: 1,
          },
          {
            kind: "disconnected",
            reason: expect.stringMatching(/did not get the stream ready/),
            failures: 2,
          },
        ]);
      }
    } finally {
      for (const c of silentWs.clients) c.terminate();
      silentWs.close();
      silentTcp.close();
      silentHttp.closeAllConnections();
      silentHttp.close();
    }
  });

  it("stops when the hub says the device was removed", async () => {
    onReady = (ws) => ws.close(STREAM_CLOSE.removed, "removed");
    const status = await new Promise<StreamStatus["kind"]>((resolve) => {
      const stream = new InboxStream({
        baseUrl: base,
        signer,
        after: () => undefined,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        onStatus: (s) => {
          if (s.kind !== "ready") resolve(s.kind);
        },
        onItems: async () => undefined,
      });
      stream.start();
    });
    expect(status).toBe("removed");
  });

  it("stops for good when the hub refuses the device as no longer registered, and retries other refusals", async () => {
    let refusals = 0;
    onReady = (ws, n) => {
      // First an ordinary failure (the stream reconnects), then the final refusal of a revoked device.
      if (n === 1) return ws.close(STREAM_CLOSE.authFailed, "bad");
      refusals++;
      ws.send(JSON.stringify({ type: "error", error: "device_not_registered", message: "revoked" }));
      ws.close(STREAM_CLOSE.authFailed, "device_not_registered");
    };
    const seen: StreamStatus[] = [];
    const final = await new Promise<StreamStatus>((resolve) => {
      const stream = new InboxStream({
        baseUrl: base,
        signer,
        after: () => undefined,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        onStatus: (s) => {
          seen.push(s);
          if (s.kind === "refused") resolve(s);
        },
        onItems: async () => undefined,
      });
      stream.start();
    });
    expect(final).toMatchObject({
      kind: "refused",
      reason: expect.stringContaining("device_not_registered"),
    });
    expect(seen.map((s) => s.kind)).toEqual(["ready", "disconnected", "ready", "refused"]);
    expect(refusals).toBe(1);
  });
});

describe("InboxStream submissions (D6)", () => {
  const GROUP = "AAAAAAAAAAAAAAAAAAAAAA";

  /** A started stream, once the hub said ready. */
  async function readyStream(submitTimeoutMs?: number): Promise<InboxStream> {
    let stream!: InboxStream;
    await new Promise<void>((resolve) => {
      stream = new InboxStream({
        baseUrl: base,
        signer,
        after: () => undefined,
        reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
        ...(submitTimeoutMs === undefined ? {} : { submitTimeoutMs }),
        onStatus: (s) => {
          if (s.kind === "ready") resolve();
        },
        onItems: async () => undefined,
      });
      stream.start();
    });
    return stream;
  }

  it("is not offered before the stream is ready, nor after it closed", async () => {
    const stream = new InboxStream({
      baseUrl: base,
      signer,
      after: () => undefined,
      reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
      onItems: async () => undefined,
    });
    expect(stream.submit(GROUP, new Uint8Array([1]))).toBeUndefined();
    stream.close();
    const ready = await readyStream();
    ready.close();
    expect(ready.submit(GROUP, new Uint8Array([1]))).toBeUndefined();
  });

  it("matches each answer to its frame: submitted gives seq and epoch, refused the route's error with its details", async () => {
    const frames: { id: string; group_id: string; message: string }[] = [];
    onSubmit = (ws, f) => {
      frames.push(f);
      // Answered in the order of the frames, as the hub does.
      ws.send(
        JSON.stringify(
          f.message === toBase64url(new Uint8Array([2]))
            ? {
                type: "refused",
                id: f.id,
                error: "wrong_epoch",
                message: "moved on",
                epoch: 7,
                commit_hash: null,
              }
            : { type: "submitted", id: f.id, seq: frames.length, epoch: 6 },
        ),
      );
    };
    const stream = await readyStream();
    const first = stream.submit(GROUP, new Uint8Array([1]));
    const second = stream.submit(GROUP, new Uint8Array([2]));
    const third = stream.submit(GROUP, new Uint8Array([3]));
    expect(await first).toEqual({ seq: 1, epoch: 6 });
    await expect(second).rejects.toMatchObject({
      name: "ServiceRefusedError",
      code: "wrong_epoch",
      status: 409,
      details: { epoch: 7, commit_hash: null },
    });
    expect(await third).toEqual({ seq: 3, epoch: 6 });
    expect(frames.map((f) => f.group_id)).toEqual([GROUP, GROUP, GROUP]);
    expect(new Set(frames.map((f) => f.id)).size).toBe(3);
    stream.close();
  });

  it("a socket lost before the answer, or no answer in time, is an unknown outcome (ServiceUnavailableError)", async () => {
    onSubmit = (ws) => ws.terminate();
    const stream = await readyStream();
    await expect(stream.submit(GROUP, new Uint8Array([1]))).rejects.toMatchObject({
      name: "ServiceUnavailableError",
    });
    stream.close();

    onSubmit = () => undefined; // the hub never answers
    const silent = await readyStream(50);
    await expect(silent.submit(GROUP, new Uint8Array([1]))).rejects.toThrow(/no answer/);
    const waiting = silent.submit(GROUP, new Uint8Array([2]));
    silent.close();
    await expect(waiting).rejects.toThrow(/closed before the hub answered/);
  });

  it("holds back a hub pushing batches faster than the device processes them; a submission is still answered", async () => {
    // Found by an audit: every frame was read, parsed and queued, the socket never paused, so memory grew
    // with whatever the hub sent (150 frames of 1 MiB read while one batch was processed).
    const frames = 150;
    const payload = toBase64url(new Uint8Array(randomBytes(1024 * 1024 - 64)));
    let written = 0;
    onReady = (ws) => {
      for (let i = 1; i <= frames; i++) {
        const item = { ...message(i), kind: "message", epoch: 1, sender: "A".repeat(43), message: payload };
        ws.send(JSON.stringify({ type: "items", items: [item], cursor: `c${i}` }), () => written++);
      }
    };
    onSubmit = (ws, f) => ws.send(JSON.stringify({ type: "submitted", id: f.id, seq: 1, epoch: 1 }));
    let received = 0;
    let release!: () => void;
    const busy = new Promise<void>((resolve) => (release = resolve));
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const stream = new InboxStream({
      baseUrl: base,
      signer,
      after: () => undefined,
      reconnect: { attempts: 1, baseDelayMs: 10, maxDelayMs: 10 },
      onStatus: (st) => {
        if (st.kind === "ready") ready();
      },
      onItems: async () => {
        received++;
        await busy; // a device busy with its first batch
      },
    });
    stream.start();
    await isReady;
    // Wait until the hub can write no more: its writes stall once the device stops reading.
    let last = -1;
    while (written !== last) {
      last = written;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(received).toBe(1);
    expect(written).toBeLessThan(MAX_UNPROCESSED_BATCHES + 24);
    // A submission's answer is read even so.
    await expect(stream.submit(GROUP, new Uint8Array([1, 2, 3]))).resolves.toMatchObject({ seq: 1 });
    // Once the device gets through its batches, the rest comes.
    release();
    while (received < frames) await new Promise((r) => setTimeout(r, 50));
    stream.close();
    expect(received).toBe(frames);
  }, 30_000);
});

/** Resolves once `done()` holds; fails the test after 5 s. */
async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
