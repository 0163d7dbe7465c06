import WebSocket from "ws";
import { signRequest, type DeviceSigner } from "@mastodon-mls/bridge";
import { fromBase64url, type StreamServerFrame } from "@mastodon-mls/protocol";
import { HUB_ORIGIN } from "./hub.js";

/** A WebSocket stream client that records every frame and lets a test await the ones it expects. */
export class StreamClient {
  readonly frames: StreamServerFrame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: WebSocket) {
    socket.on("message", (data: Buffer) => {
      this.frames.push(JSON.parse(data.toString("utf8")) as StreamServerFrame);
      this.notify();
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", (code, reason) => {
        resolve({ code, reason: reason.toString() });
        this.notify();
      });
    });
  }

  static async connect(baseUrl: string): Promise<StreamClient> {
    const socket = new WebSocket(`${baseUrl.replace(/^http/, "ws")}/v1/stream`);
    const client = new StreamClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    return client;
  }

  /** Connects, answers the challenge, and waits for `ready`. */
  static async open(baseUrl: string, signer: DeviceSigner, after?: string): Promise<StreamClient> {
    const client = await StreamClient.connect(baseUrl);
    const challenge = await client.next("challenge");
    await client.auth(signer, challenge.challenge, after);
    await client.next("ready");
    return client;
  }

  async auth(signer: DeviceSigner, challenge: string, after?: string): Promise<void> {
    const authorization = await signRequest(signer, {
      method: "GET",
      origin: HUB_ORIGIN,
      pathAndQuery: "/v1/stream",
      body: fromBase64url(challenge),
    });
    this.send({ type: "auth", authorization, ...(after ? { after } : {}) });
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** The first not-yet-taken frame of this type, waiting up to `timeoutMs` for it. */
  async next<T extends StreamServerFrame["type"]>(
    type: T,
    timeoutMs = 5000,
  ): Promise<Extract<StreamServerFrame, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex((f) => f.type === type);
      if (i >= 0) return this.frames.splice(i, 1)[0] as Extract<StreamServerFrame, { type: T }>;
      if (this.socket.readyState === WebSocket.CLOSED)
        throw new Error(`stream closed while waiting for ${type}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${type} frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Items frames until `count` items arrived in all. */
  async items(count: number, timeoutMs = 10_000) {
    const out = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < count)
      out.push(...(await this.next("items", Math.max(1, deadline - Date.now()))).items);
    return out;
  }

  close(): void {
    this.socket.close();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
