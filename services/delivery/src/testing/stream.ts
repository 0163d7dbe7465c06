import WebSocket from "ws";
import { signRequest, type DeviceSigner } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url, type InboxItem, type StreamServerFrame } from "@mastodon-mls/protocol";
import { HUB_ORIGIN } from "./hub.js";

type Frame<T extends StreamServerFrame["type"]> = Extract<StreamServerFrame, { type: T }>;
export type SubmitAnswer = Frame<"submitted"> | Frame<"refused">;

/** A WebSocket stream client that records every frame and lets a test await the ones it expects. */
export class StreamClient {
  readonly frames: StreamServerFrame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];
  private nextId = 0;

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

  /** Sends a `submit` frame without waiting; returns its id. */
  submitFrame(groupId: string, message: Uint8Array, welcome?: Uint8Array): string {
    const id = String(++this.nextId);
    this.send({
      type: "submit",
      id,
      group_id: groupId,
      message: toBase64url(message),
      ...(welcome ? { welcome: toBase64url(welcome) } : {}),
    });
    return id;
  }

  /** Submits a message on the stream and waits for its answer. */
  async submit(groupId: string, message: Uint8Array, welcome?: Uint8Array): Promise<SubmitAnswer> {
    return this.answer(this.submitFrame(groupId, message, welcome));
  }

  /** The `submitted` or `refused` frame for this id. */
  answer(id: string, timeoutMs = 5000): Promise<SubmitAnswer> {
    return this.take(
      (f): f is SubmitAnswer => (f.type === "submitted" || f.type === "refused") && f.id === id,
      `answer ${id}`,
      timeoutMs,
    );
  }

  /** The first not-yet-taken frame of this type, waiting up to `timeoutMs` for it. */
  next<T extends StreamServerFrame["type"]>(type: T, timeoutMs = 5000): Promise<Frame<T>> {
    return this.take((f): f is Frame<T> => f.type === type, `${type} frame`, timeoutMs);
  }

  /** Items frames until `count` items arrived in all. */
  async items(count: number, timeoutMs = 10_000): Promise<InboxItem[]> {
    const out: InboxItem[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < count)
      out.push(...(await this.next("items", Math.max(1, deadline - Date.now()))).items);
    return out;
  }

  close(): void {
    this.socket.close();
  }

  private async take<F extends StreamServerFrame>(
    match: (f: StreamServerFrame) => f is F,
    what: string,
    timeoutMs: number,
  ): Promise<F> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0] as F;
      if (this.socket.readyState === WebSocket.CLOSED)
        throw new Error(`stream closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * A device reading its inbox over a stream as a client would across replica failures: it keeps every
 * item, and when its socket closes it reconnects to the next URL, resuming after the last item it got.
 */
export class ResilientReader {
  readonly items: InboxItem[] = [];
  readonly closes: number[] = [];
  private stream: StreamClient | undefined;
  private stopped = false;
  private waiters: (() => void)[] = [];
  private reconnecting: Promise<void> = Promise.resolve();

  constructor(
    private readonly urls: () => string[],
    private readonly signer: DeviceSigner,
  ) {}

  async start(): Promise<void> {
    await this.connect(0);
  }

  /** Waits until `done(items)` holds, or fails after `timeoutMs`. */
  async until(done: (items: InboxItem[]) => boolean, timeoutMs = 10_000): Promise<InboxItem[]> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.items)) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`reader: condition not met within ${timeoutMs} ms (${this.items.length} items)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.items;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.reconnecting;
    this.stream?.close();
  }

  private async connect(attempt: number): Promise<void> {
    const urls = this.urls();
    const url = urls[attempt % urls.length]!;
    const after = this.items.at(-1)?.cursor;
    let stream: StreamClient;
    try {
      stream = await StreamClient.open(url, this.signer, after);
    } catch {
      if (this.stopped || attempt > 50) return;
      return this.connect(attempt + 1);
    }
    this.stream = stream;
    const drain = () => {
      for (let f = stream.frames.shift(); f; f = stream.frames.shift()) {
        if (f.type === "items") this.items.push(...f.items);
      }
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    };
    stream.socket.on("message", drain);
    drain();
    void stream.closed.then(({ code }) => {
      this.closes.push(code);
      if (this.stopped) return;
      this.reconnecting = this.connect(attempt + 1);
    });
  }
}
