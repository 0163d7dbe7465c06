import type { LookupFunction } from "node:net";
import { signRequest, type DeviceSigner } from "@mastodon-mls/bridge";
import {
  STREAM_CLOSE,
  StreamServerFrame,
  fromBase64url,
  isErrorCode,
  toBase64url,
  type InboxItem,
  type StreamClientFrame,
  type SubmitMessageResponse,
} from "@mastodon-mls/protocol";
import WebSocket from "ws";
import { ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import { backoffDelay, type RetryPolicy } from "../util/backoff.js";
import { publicOnlyLookup, refusedLiteral, type Reach } from "./publicReach.js";

export const STREAM_PATH = "/v1/stream";

export type StreamStatus =
  | { kind: "ready" }
  | { kind: "disconnected"; reason: string; failures: number }
  /** The hub says this device is no longer a member anywhere it listened: the stream stops. */
  | { kind: "removed" }
  /**
   * The hub refuses this device for good (`device_not_registered`: its account's directory no longer
   * lists it, e.g. revoked): the stream stops, and polling would be refused too.
   */
  | { kind: "refused"; reason: string }
  | { kind: "closed" };

export interface InboxStreamOptions {
  /** The hub's base URL (http/https); the socket goes to the same origin, ws/wss. */
  baseUrl: string;
  /**
   * Whether another party named the hub, so that it is reached at public addresses only (NET-7): a name
   * by the socket's own lookup, an IP literal (which the socket connects to without a lookup) before
   * connecting. Default: any address.
   */
  reach?: Reach;
  signer: DeviceSigner;
  /** The cursor to resume after, read at each (re)connection: the last one processed durably. */
  after: () => string | undefined;
  /** Processes a batch durably; the stream acknowledges the cursor only after this resolves. */
  onItems: (items: InboxItem[], cursor: string) => Promise<void>;
  onStatus?: (status: StreamStatus) => void;
  reconnect: RetryPolicy;
  /** How long a `submit` frame waits for its answer before its outcome counts as unknown. */
  submitTimeoutMs?: number;
  /**
   * How long a connection may take from the first packet to `ready` (TCP, TLS, the upgrade, the
   * challenge and the answer to `auth`) before it is dropped and tried again. Default 15 s.
   */
  readyTimeoutMs?: number;
  /**
   * The hub refused the cursor of `after` (`invalid_cursor`: e.g. its store was rebuilt from an older
   * copy): run before reconnecting, so that `after` gives a cursor the hub knows (the HTTP read resets
   * it, groups/inbox.ts). Without it the stream would try the same cursor again and again.
   */
  onCursorRefused?: () => Promise<void>;
}

/** Sends an application message over a hub's open stream; undefined when the stream is not ready. */
export interface StreamSubmitter {
  submit(groupId: string, message: Uint8Array): Promise<SubmitMessageResponse> | undefined;
}

interface WaitingSubmit {
  resolve(answer: SubmitMessageResponse): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

const SUBMIT_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 15_000;
/**
 * Batches received and not yet processed above which the socket is no longer read: TCP then holds the
 * hub back (a hub pushing faster than the device processes, up to 64 MiB a frame, was read into memory
 * without bound). Reading starts again when half are done, or while a submission waits for its answer.
 */
export const MAX_UNPROCESSED_BATCHES = 16;

/**
 * The `/v1/stream` WebSocket of one hub (protocol: challenge → auth → ready → items; the client acks).
 * It reconnects with backoff and jitter and resumes after the last durably processed cursor, so a
 * dropped connection loses nothing: at worst a batch is delivered again and skipped by sequence number.
 */
export class InboxStream implements StreamSubmitter {
  private ws: WebSocket | undefined;
  /** The socket that is authenticated (`ready` came), if any: only it takes submissions. */
  private readyWs: WebSocket | undefined;
  private readonly waiting = new Map<string, WaitingSubmit>();
  private nextSubmitId = 0;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private work: Promise<void> = Promise.resolve();
  /** Batches of the current socket received and not yet processed. */
  private unprocessed = 0;

  constructor(private readonly opts: InboxStreamOptions) {}

  start(): void {
    this.connect();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.readyWs = undefined;
    this.abandonSubmits("the stream was closed before the hub answered");
    this.ws?.close(1000);
    this.opts.onStatus?.({ kind: "closed" });
  }

  /**
   * Submits an application message on this authenticated stream (docs/decisions.md D6): no request
   * signature, no new HTTP request. Undefined when the stream is not ready: the caller posts it over HTTP.
   * Answers as the HTTP route would: a refusal is a ServiceRefusedError with the route's code; a stream
   * that closes, or no answer in time, is a ServiceUnavailableError (the hub may have taken it).
   */
  submit(groupId: string, message: Uint8Array): Promise<SubmitMessageResponse> | undefined {
    const ws = this.readyWs;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) return undefined;
    const id = String(++this.nextSubmitId);
    return new Promise<SubmitMessageResponse>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settleSubmit(id, this.unavailable("no answer to a submission on the stream in time")),
        this.opts.submitTimeoutMs ?? SUBMIT_TIMEOUT_MS,
      );
      this.waiting.set(id, { resolve, reject, timer });
      // Its answer comes on this socket: read it even while batches wait (no deadlock with a sender
      // holding the device's queue until it is answered).
      if (ws.isPaused) ws.resume();
      send(ws, { type: "submit", id, group_id: groupId, message: toBase64url(message) });
    });
  }

  private settleSubmit(id: string, outcome: SubmitMessageResponse | Error): void {
    const w = this.waiting.get(id);
    if (w === undefined) return; // answered already, or given up on
    this.waiting.delete(id);
    clearTimeout(w.timer);
    if (outcome instanceof Error) w.reject(outcome);
    else w.resolve(outcome);
  }

  /** Every submission still waiting has an unknown outcome once its socket is gone. */
  private abandonSubmits(why: string): void {
    for (const id of [...this.waiting.keys()]) this.settleSubmit(id, this.unavailable(why));
  }

  private unavailable(why: string): ServiceUnavailableError {
    return new ServiceUnavailableError("delivery service", this.opts.baseUrl, why);
  }

  /** Resolves once the batches received so far are processed (used when shutting down cleanly). */
  idle(): Promise<void> {
    return this.work;
  }

  private connect(): void {
    if (this.closed) return;
    const url = new URL(STREAM_PATH, `${this.opts.baseUrl}/`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // ws hands its options to the socket's connect, `lookup` included.
    const options: WebSocket.ClientOptions & { lookup?: LookupFunction } = { maxPayload: 64 * 1024 * 1024 };
    const reach = this.opts.reach ?? "any";
    if (reach !== "any") {
      // A literal is connected to without asking the lookup: checked here, as ServiceHttp does. A hub
      // remembered before literals were refused on arrival would otherwise be connected to.
      const refused = refusedLiteral(url);
      if (refused !== undefined) {
        this.retryLater(refused.message);
        return;
      }
      options.lookup = publicOnlyLookup(reach.publicOnly);
    }
    const ws = new WebSocket(url, options);
    this.ws = ws;
    this.work = Promise.resolve();
    this.unprocessed = 0;
    let why = "connection closed";
    let final = false;
    let cursorRefused = false;
    // A hub that takes the connection and then says nothing (no upgrade, no challenge, no `ready`) would
    // hold this stream for ever, and with it the fall-back to polling: it is dropped and tried again.
    const readyTimeoutMs = this.opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
    let timedOut = false;
    const notReady = setTimeout(() => {
      timedOut = true;
      why = `the hub did not get the stream ready within ${readyTimeoutMs} ms`;
      ws.terminate();
    }, readyTimeoutMs);
    ws.on("message", (data: WebSocket.RawData) => {
      let frame: StreamServerFrame;
      try {
        frame = StreamServerFrame.parse(JSON.parse(rawText(data)));
      } catch {
        why = "the hub sent a frame that is not our protocol";
        ws.close(STREAM_CLOSE.badFrame);
        return;
      }
      if (frame.type === "error" && frame.error === "device_not_registered") final = true;
      if (frame.type === "error" && frame.error === "invalid_cursor") cursorRefused = true;
      if (frame.type === "ready") clearTimeout(notReady);
      this.onFrame(ws, frame).catch((e: unknown) => {
        why = e instanceof Error ? e.message : String(e);
        ws.close(1011);
      });
    });
    ws.on("error", (e) => {
      // Dropping a socket still connecting is an error of its own: the reason stays the time-out.
      if (!timedOut) why = e.message;
    });
    ws.on("close", (code, reason) => {
      clearTimeout(notReady);
      if (this.ws === ws) this.ws = undefined;
      if (this.readyWs === ws) {
        this.readyWs = undefined;
        this.abandonSubmits(`the stream closed (${code}) before the hub answered`);
      }
      if (this.closed) return;
      if (code === STREAM_CLOSE.removed) {
        this.closed = true;
        this.opts.onStatus?.({ kind: "removed" });
        return;
      }
      if (final) {
        this.closed = true;
        this.opts.onStatus?.({ kind: "refused", reason: why });
        return;
      }
      const text = reason.toString("utf8");
      this.retryLater(
        text !== "" ? `${code}: ${text}` : why,
        cursorRefused ? this.opts.onCursorRefused : undefined,
      );
    });
  }

  /**
   * A connection that failed or ended: reported as `disconnected`, and tried again after a backoff (after
   * `before`, when given; a failure of it leaves the cursor as it was: the next attempt is refused again
   * and tries again).
   */
  private retryLater(reason: string, before?: () => Promise<void>): void {
    this.failures++;
    this.opts.onStatus?.({ kind: "disconnected", reason, failures: this.failures });
    const delay = Math.max(50, backoffDelay(this.opts.reconnect, Math.min(this.failures, 10)));
    if (before === undefined) {
      if (!this.closed) this.timer = setTimeout(() => this.connect(), delay);
      return;
    }
    void before()
      .catch(() => undefined)
      .then(() => {
        if (!this.closed) this.timer = setTimeout(() => this.connect(), delay);
      });
  }

  private async onFrame(ws: WebSocket, frame: StreamServerFrame): Promise<void> {
    switch (frame.type) {
      case "challenge": {
        const origin = new URL(this.opts.baseUrl).origin;
        const authorization = await signRequest(this.opts.signer, {
          method: "GET",
          origin,
          pathAndQuery: STREAM_PATH,
          body: challengeBody(frame.challenge),
        });
        const after = this.opts.after();
        send(ws, { type: "auth", authorization, ...(after !== undefined ? { after } : {}) });
        return;
      }
      case "ready":
        this.failures = 0;
        this.readyWs = ws;
        this.opts.onStatus?.({ kind: "ready" });
        return;
      case "items": {
        // Batches are processed one after the other, in arrival order, each acknowledged when done.
        const { items, cursor } = frame;
        if (++this.unprocessed >= MAX_UNPROCESSED_BATCHES && this.waiting.size === 0) ws.pause();
        const job = this.work.then(async () => {
          await this.opts.onItems(items, cursor);
          if (ws.readyState === WebSocket.OPEN) send(ws, { type: "ack", cursor });
        });
        this.work = job.catch(() => undefined);
        try {
          await job; // a failure closes the socket: the batch comes again after the last durable cursor
        } finally {
          if (this.ws === ws) this.unprocessed--;
          if (ws.isPaused && this.unprocessed <= MAX_UNPROCESSED_BATCHES / 2) ws.resume();
        }
        return;
      }
      case "submitted":
        this.settleSubmit(frame.id, { seq: frame.seq, epoch: frame.epoch });
        return;
      case "refused": {
        const { id, error, message, type: _type, ...details } = frame;
        this.settleSubmit(
          id,
          isErrorCode(error)
            ? new ServiceRefusedError(
                "delivery service",
                this.opts.baseUrl,
                error,
                message,
                Object.keys(details).length > 0 ? details : undefined,
              )
            : this.unavailable(`the hub answered a submission with an unknown code: ${error}: ${message}`),
        );
        return;
      }
      case "error":
        throw new Error(`the hub refused the stream: ${frame.error}: ${frame.message}`);
    }
  }
}

/** The bytes signed as the body of the stream's auth frame: the challenge, sent base64url, decoded. */
export function challengeBody(challenge: string): Uint8Array {
  return fromBase64url(challenge, 1024);
}

function send(ws: WebSocket, frame: StreamClientFrame): void {
  ws.send(JSON.stringify(frame));
}

function rawText(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data as ArrayBuffer).toString("utf8");
}
