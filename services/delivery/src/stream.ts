import { randomBytes } from "node:crypto";
import type { WebSocket } from "ws";
import {
  ProtocolError,
  STREAM_CLOSE,
  StreamClientFrame,
  toBase64url,
  type StreamServerFrame,
} from "@mastodon-mls/protocol";
import { verifyRequest } from "@mastodon-mls/bridge";
import type { DeliveryContext } from "./context.js";
import { decodeCursor, encodeCursor, type Cursor } from "./cursor.js";
import { ackCursor, readInbox, type InboxReader } from "./inbox.js";
import type { InboxEvent } from "./notifier.js";

// GET /v1/stream (DESIGN §6, §7): the inbox, pushed. The server speaks first with a challenge; the
// client's first frame signs it; then the server sends `ready` and pushes `items` frames whenever its
// device may have something new, starting after `after` or the acknowledged positions.

/** Sessions by device and account, woken by inbox events. */
export class StreamSessions {
  private readonly byDevice = new Map<string, Set<StreamSession>>();
  private readonly byAcct = new Map<string, Set<StreamSession>>();
  private readonly all = new Set<StreamSession>();
  private readonly unsubscribe: () => void;

  constructor(private readonly ctx: DeliveryContext) {
    this.unsubscribe = ctx.notifier.subscribe((e) => this.wake(e));
  }

  open(socket: WebSocket): StreamSession {
    const session = new StreamSession(this.ctx, socket, this);
    this.all.add(session);
    return session;
  }

  /** Called once a session has authenticated. */
  listen(session: StreamSession, reader: InboxReader): void {
    add(this.byDevice, reader.device, session);
    add(this.byAcct, reader.acct, session);
    this.ctx.metrics.sockets.inc();
  }

  forget(session: StreamSession): void {
    if (!this.all.delete(session)) return;
    const reader = session.reader;
    if (reader) {
      remove(this.byDevice, reader.device, session);
      remove(this.byAcct, reader.acct, session);
      this.ctx.metrics.sockets.dec();
    }
  }

  get size(): number {
    return this.all.size;
  }

  /** Closes every socket with 4000: the client reconnects (elsewhere) and resumes from its cursor. */
  closeAll(reason: string): void {
    for (const session of [...this.all]) session.close(STREAM_CLOSE.resume, reason);
    this.unsubscribe();
  }

  private wake(e: InboxEvent): void {
    const targets =
      e.kind === "account" ? [this.byAcct.get(e.acct)] : e.devices.map((d) => this.byDevice.get(d));
    for (const set of targets) for (const session of set ?? []) session.wake();
  }
}

function add(map: Map<string, Set<StreamSession>>, key: string, s: StreamSession): void {
  const set = map.get(key) ?? new Set();
  set.add(s);
  map.set(key, set);
}

function remove(map: Map<string, Set<StreamSession>>, key: string, s: StreamSession): void {
  const set = map.get(key);
  set?.delete(s);
  if (set?.size === 0) map.delete(key);
}

export class StreamSession {
  reader: InboxReader | undefined;
  private readonly challenge = new Uint8Array(randomBytes(32));
  private position: Cursor = new Map();
  private state: "challenged" | "authenticating" | "open" | "closed" = "challenged";
  private pumping = false;
  private again = false;
  private readonly authTimer: NodeJS.Timeout;

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly socket: WebSocket,
    private readonly sessions: StreamSessions,
  ) {
    socket.on("message", (data, isBinary) => void this.onFrame(data, isBinary));
    socket.on("close", () => this.closed());
    socket.on("error", () => this.closed());
    this.authTimer = setTimeout(
      () => this.fail(STREAM_CLOSE.authFailed, new ProtocolError("unauthorized", "No auth frame in time.")),
      ctx.limits.streamAuthMs,
    );
    this.send({ type: "challenge", challenge: toBase64url(this.challenge) });
  }

  /** Something new may be waiting for this device. */
  wake(): void {
    if (this.state === "open") void this.pump();
  }

  close(code: number, reason: string): void {
    if (this.state === "closed") return;
    this.closed();
    this.socket.close(code, reason);
  }

  private closed(): void {
    this.state = "closed";
    clearTimeout(this.authTimer);
    this.sessions.forget(this);
  }

  private async onFrame(data: unknown, isBinary: boolean): Promise<void> {
    if (this.state === "closed") return;
    const frame = isBinary ? undefined : parseFrame(data);
    if (!frame) {
      this.fail(
        STREAM_CLOSE.badFrame,
        new ProtocolError("bad_request", "Frames are JSON StreamClientFrames."),
      );
      return;
    }
    if (this.state === "challenged") {
      if (frame.type !== "auth") {
        this.fail(
          STREAM_CLOSE.authFailed,
          new ProtocolError("unauthorized", "The first frame must be auth."),
        );
        return;
      }
      await this.authenticate(frame.authorization, frame.after);
      return;
    }
    if (this.state !== "open" || frame.type !== "ack") {
      this.fail(STREAM_CLOSE.badFrame, new ProtocolError("bad_request", "Only ack frames are expected now."));
      return;
    }
    try {
      await ackCursor(this.ctx.store, this.reader!, decodeCursor(frame.cursor));
    } catch (e) {
      this.failWith(e);
    }
  }

  private async authenticate(authorization: string, after: string | undefined): Promise<void> {
    this.state = "authenticating";
    let reader: InboxReader;
    try {
      const cert = await verifyRequest(
        authorization,
        {
          method: "GET",
          origin: this.ctx.config.publicUrl,
          pathAndQuery: "/v1/stream",
          body: this.challenge,
        },
        { nonces: this.ctx.nonces },
      );
      reader = { device: cert.deviceIdText, acct: cert.acct };
    } catch (e) {
      if (e instanceof ProtocolError) this.fail(STREAM_CLOSE.authFailed, e);
      else this.failWith(e);
      return;
    }
    if (this.state !== "authenticating") return; // closed meanwhile
    clearTimeout(this.authTimer);
    try {
      this.position = after === undefined ? new Map() : decodeCursor(after);
    } catch (e) {
      this.failWith(e);
      return;
    }
    this.reader = reader;
    this.state = "open";
    this.sessions.listen(this, reader);
    this.send({ type: "ready", cursor: encodeCursor(this.position) });
    await this.pump();
  }

  /** Sends pages until the inbox is drained; a wake-up during a pump runs it once more. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        for (;;) {
          if (this.state !== "open") return;
          const page = await readInbox(this.ctx.store, this.reader!, this.position, {
            limit: this.ctx.limits.pageItems,
            maxBytes: this.ctx.limits.pageBytes,
          });
          if (this.state !== "open") return;
          this.position = page.cursor;
          if (page.items.length > 0) {
            this.send({ type: "items", items: page.items, cursor: encodeCursor(page.cursor) });
          }
          if (!page.more) break;
        }
      } while (this.again);
    } catch (e) {
      this.failWith(e);
    } finally {
      this.pumping = false;
    }
  }

  private send(frame: StreamServerFrame): void {
    if (this.state === "closed") return;
    this.socket.send(JSON.stringify(frame));
    // A client that does not read cannot make the server hold its whole inbox in memory.
    if (this.socket.bufferedAmount > this.ctx.limits.streamBufferBytes) {
      this.close(STREAM_CLOSE.resume, "send buffer full; resume from your cursor");
    }
  }

  private failWith(e: unknown): void {
    if (e instanceof ProtocolError && e.status < 500) {
      this.fail(STREAM_CLOSE.badFrame, e);
      return;
    }
    this.ctx.log.warn(
      { err: e instanceof Error ? { name: e.name, message: e.message } : String(e) },
      "stream failed",
    );
    this.close(STREAM_CLOSE.resume, "try again");
  }

  private fail(code: number, e: ProtocolError): void {
    this.send({ type: "error", error: e.code, message: e.message });
    this.close(code, e.code);
  }
}

function parseFrame(data: unknown): StreamClientFrame | undefined {
  try {
    const text = Buffer.isBuffer(data)
      ? data.toString("utf8")
      : Array.isArray(data)
        ? Buffer.concat(data as Buffer[]).toString("utf8")
        : Buffer.from(data as ArrayBuffer).toString("utf8");
    const parsed = StreamClientFrame.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
