import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import {
  LIMITS,
  ProtocolError,
  STREAM_CLOSE,
  StreamClientFrame,
  fromBase64url,
  toBase64url,
  type InboxItem,
  type StreamServerFrame,
} from "@mastodon-mls/protocol";
import { verifyRequest, type DeviceCertificate } from "@mastodon-mls/bridge";
import { errorSummary, isStoreFailure } from "@mastodon-mls/service-kit";
import { acknowledge } from "./acknowledge.js";
import type { DeliveryContext } from "./context.js";
import { MAX_CURSOR_STREAMS, decodeCursor, encodeCursor, type Cursor } from "./cursor.js";
import { inboxReader } from "./deviceAccess.js";
import { isListedAs, type RegisteredDevices } from "./directoryDevices.js";
import { ITEM_CURSOR_CHARS, checkCursor, readInbox, type GroupStream, type InboxReader } from "./inbox.js";
import {
  accountTopic,
  deviceTopic,
  groupTopic,
  type GroupEvent,
  type InboxEvent,
  type Topic,
} from "./notifier.js";
import { submitMessage } from "./submit.js";

// GET /v1/stream (DESIGN §6, §7): the inbox, pushed. The server speaks first with a challenge; the
// client's first frame signs it; then the server sends `ready` and pushes `items` frames whenever its
// device may have something new, starting after `after` or the acknowledged positions. Once
// authenticated, the client may also submit messages on the stream (`submit` frames).
//
// Pushing: a stream that has read its inbox to the end knows, per group, the position it reached. An event
// for the entry right after that position, carrying the entry, is pushed as is (no store read); anything
// else — a gap, a membership change, a notice, an event during a read — makes the stream read its inbox
// from the store again. Pushed items wait for the end of the event-loop turn, and, on a stream that sent
// a frame less than `pushCoalesceMs` ago, until then: under load items leave several to a frame.
//
// Writing: each frame the socket sends on its own is a system call (and, on loopback, the receiver's TCP
// work too), the largest cost of a push. So answers to `submit` frames wait for the end of the event-loop
// turn as well, and everything a stream has to send then leaves in one write: typically a sender's
// `submitted` and the push of its own message, whose announcement usually arrives in the same turn (with
// Redis it comes on the subscriber's connection, and under load sometimes a turn later: then it waits for
// the hold like any push).

/**
 * The pushed item's JSON up to the cursor's value, UTF-8, of the event being dispatched: the same for
 * every stream of this replica, so made once per event and copied, not re-encoded, into each stream's
 * frame. One entry, not a WeakMap: dispatch hands an event to all its streams in a row, and a WeakMap
 * entry per event would be an ephemeron for every young-generation GC to trace.
 */
let headEvent: GroupEvent | undefined;
let headBytes: Buffer | undefined;
/** A stream's device, from its verified certificate. */
interface StreamDevice {
  deviceIdText: string;
  /** Unix seconds. */
  notAfter: number;
  /** base64url of the certificate's account key, as the directory's answers name it. */
  accountKeyText: string;
}

/** The refusal of a submit frame sent once the device certificate expired (over HTTP: the same code). */
const CERTIFICATE_EXPIRED = new ProtocolError("auth_expired", "The device certificate expired.");

const FRAME_START = Buffer.from('{"type":"items","items":[');
const FRAME_CURSOR = Buffer.from('],"cursor":"');
const QUOTE = 0x22;
const CLOSE = 0x7d;
const COMMA = 0x2c;

/**
 * A StreamServerFrame `items` as UTF-8 from `items`: each item's head followed by its cursor, then the
 * frame's cursor. Cursors are base64url (ASCII), so their latin1 bytes are their UTF-8 bytes.
 */
function itemsFrame(items: readonly (Buffer | string)[], cursor: string): Buffer {
  let size = FRAME_START.length + items.length / 2 - 1 + FRAME_CURSOR.length + cursor.length + 2;
  for (let i = 0; i < items.length; i += 2) size += items[i]!.length + items[i + 1]!.length + 2;
  const out = Buffer.allocUnsafe(size);
  let at = FRAME_START.copy(out, 0);
  for (let i = 0; i < items.length; i += 2) {
    if (i > 0) out[at++] = COMMA;
    at += (items[i] as Buffer).copy(out, at);
    at += out.write(items[i + 1] as string, at, "latin1");
    out[at++] = QUOTE;
    out[at++] = CLOSE;
  }
  at += FRAME_CURSOR.copy(out, at);
  at += out.write(cursor, at, "latin1");
  out[at++] = QUOTE;
  out[at++] = CLOSE;
  return out;
}

/**
 * When the streams of this replica write what they hold: at the end of this event-loop turn, or at a
 * whole millisecond (a hold). One Immediate per turn and one timer per due millisecond for all streams,
 * instead of one timer object per stream per frame (tens of thousands a second under load).
 */
class FlushScheduler {
  private soon: StreamSession[] = [];
  private soonScheduled = false;
  private readonly held = new Map<number, StreamSession[]>();

  /** `due`: 0 for the end of this turn, else a performance.now() time in whole milliseconds. */
  add(session: StreamSession, due: number): void {
    if (due === 0) {
      this.soon.push(session);
      if (!this.soonScheduled) {
        this.soonScheduled = true;
        setImmediate(() => this.runSoon());
      }
      return;
    }
    const bucket = this.held.get(due);
    if (bucket) {
      bucket.push(session);
      return;
    }
    this.held.set(due, [session]);
    setTimeout(() => this.runHeld(due), Math.max(1, due - performance.now()));
  }

  private runSoon(): void {
    const sessions = this.soon;
    this.soon = [];
    this.soonScheduled = false;
    for (const s of sessions) s.flushIfDue(0);
  }

  private runHeld(due: number): void {
    const sessions = this.held.get(due) ?? [];
    this.held.delete(due);
    for (const s of sessions) s.flushIfDue(due);
  }
}

/** Directory requests in flight at once when re-checking the accounts of open streams. */
const RECHECK_CONCURRENCY = 8;

/** Sessions by device, account and group, woken by inbox events. */
export class StreamSessions {
  private readonly byDevice = new Map<string, Set<StreamSession>>();
  private readonly byAcct = new Map<string, Set<StreamSession>>();
  private readonly byGroup = new Map<string, Set<StreamSession>>();
  private readonly all = new Set<StreamSession>();
  private readonly unsubscribe: () => void;
  private readonly heartbeat: NodeJS.Timeout;
  readonly flushes = new FlushScheduler();

  constructor(readonly ctx: DeliveryContext) {
    this.unsubscribe = ctx.notifier.subscribe((e) => this.dispatch(e));
    // One timer for every stream, not one per stream.
    this.heartbeat = setInterval(() => {
      for (const session of [...this.all]) session.pingOrDrop();
    }, ctx.limits.streamPingMs);
    this.heartbeat.unref();
    // Whatever made the hub ask (a request of any device of the account, or recheck()), a device the
    // directory no longer lists loses its open streams then.
    ctx.directory?.onAnswer((acct, answer) => {
      for (const session of [...(this.byAcct.get(acct) ?? [])]) session.dropIfUnlisted(answer);
    });
  }

  /**
   * Closes the streams whose device certificate expired, then asks the directory again about each
   * account with a stream here whose last answer is older than the cache window (a few at a time), so
   * that a revoked device's stream closes even if nothing else of its account asks. A directory that
   * cannot be asked closes nothing. Run every DIRECTORY_CACHE_SECONDS; a call while a pass is running
   * joins it: a pass slower than the interval (many accounts, a directory timing out) would otherwise
   * overlap the next ones, each asking the directory again about the same accounts.
   */
  recheck(): Promise<void> {
    this.rechecking ??= this.recheckOnce().finally(() => (this.rechecking = undefined));
    return this.rechecking;
  }

  private rechecking: Promise<void> | undefined;

  private async recheckOnce(): Promise<void> {
    // Wall-clock time, as for every signature and certificate check.
    const now = Math.floor(Date.now() / 1000);
    for (const session of [...this.all]) session.closeIfExpired(now);
    const directory = this.ctx.directory;
    if (!directory) return;
    const stale = [...this.byAcct.keys()].filter((acct) => directory.isStale(acct));
    for (let i = 0; i < stale.length; i += RECHECK_CONCURRENCY) {
      await Promise.all(
        stale.slice(i, i + RECHECK_CONCURRENCY).map((acct) => directory.refresh(acct).catch(() => undefined)),
      );
    }
  }

  /** `raw`: the TCP socket under `socket`, corked around a stream's frames so that they leave in one write. */
  open(socket: WebSocket, raw?: Duplex): StreamSession {
    const session = new StreamSession(this.ctx, socket, this, raw);
    this.all.add(session);
    return session;
  }

  /** Called once a session has authenticated; resolves once events for its device and account arrive. */
  async listen(session: StreamSession, reader: InboxReader): Promise<void> {
    add(this.byDevice, reader.device, session);
    if (reader.acct !== undefined) add(this.byAcct, reader.acct, session);
    this.ctx.metrics.sockets.inc();
    this.ctx.metrics.devices.set(this.byDevice.size);
    await Promise.all([
      this.watch(deviceTopic(reader.device)),
      reader.acct === undefined ? undefined : this.watch(accountTopic(reader.acct)),
    ]);
  }

  /** The session holds an open stretch in these groups (and no longer in the others it had). */
  async track(
    session: StreamSession,
    before: ReadonlySet<string>,
    now: ReadonlySet<string>,
  ): Promise<number> {
    const added = [...now].filter((g) => !before.has(g));
    for (const g of before) {
      if (now.has(g)) continue;
      remove(this.byGroup, g, session);
      this.unwatch(groupTopic(g));
    }
    for (const g of added) add(this.byGroup, g, session);
    await Promise.all(added.map((g) => this.watch(groupTopic(g))));
    return added.length;
  }

  forget(session: StreamSession): void {
    if (!this.all.delete(session)) return;
    const reader = session.reader;
    if (!reader) return;
    remove(this.byDevice, reader.device, session);
    this.unwatch(deviceTopic(reader.device));
    if (reader.acct !== undefined) {
      remove(this.byAcct, reader.acct, session);
      this.unwatch(accountTopic(reader.acct));
    }
    for (const g of session.tracked) {
      remove(this.byGroup, g, session);
      this.unwatch(groupTopic(g));
    }
    this.ctx.metrics.sockets.dec();
    this.ctx.metrics.devices.set(this.byDevice.size);
  }

  get size(): number {
    return this.all.size;
  }

  /** Closes every socket with 4000: the client reconnects (elsewhere) and resumes from its cursor. */
  closeAll(reason: string): void {
    for (const session of [...this.all]) session.close(STREAM_CLOSE.resume, reason);
    clearInterval(this.heartbeat);
    this.unsubscribe();
  }

  private watch(topic: Topic): Promise<void> {
    return this.ctx.notifier.watch(topic);
  }

  private unwatch(topic: Topic): void {
    this.ctx.notifier.unwatch(topic);
  }

  private dispatch(e: InboxEvent): void {
    switch (e.kind) {
      case "group":
        for (const session of this.byGroup.get(e.groupId) ?? []) session.onGroupEvent(e);
        for (const d of e.changed ?? []) for (const session of this.byDevice.get(d) ?? []) session.wake();
        return;
      case "devices":
        for (const d of e.devices) for (const session of this.byDevice.get(d) ?? []) session.wake();
        return;
      case "account":
        for (const session of this.byAcct.get(e.acct) ?? []) session.wake();
        return;
      case "resync":
        for (const session of this.all) session.wake();
        return;
    }
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

type SubmitFrame = Extract<StreamClientFrame, { type: "submit" }>;

export class StreamSession {
  reader: InboxReader | undefined;
  /** Groups this session is registered for (an open stretch). */
  tracked: ReadonlySet<string> = new Set();
  /** What the stream keeps of its verified certificate (10,000s of idle streams: not its bytes and keys). */
  private certificate: StreamDevice | undefined;
  private challenge: Uint8Array | undefined = new Uint8Array(randomBytes(32));
  private position = new Map<string, number>();
  /** After a full read: the position each stream was read to. */
  private reached = new Map<string, number>();
  private groups = new Map<string, GroupStream>();
  private streamGroups = new Map<string, string | undefined>();
  private state: "challenged" | "authenticating" | "open" | "closed" = "challenged";
  private pumping = false;
  private again = false;
  private authTimer: NodeJS.Timeout | undefined;
  // Both made when first needed: an idle stream (most of them) holds neither.
  /** Pushed items waiting for their frame: each event's item head, then this stream's cursor for it. */
  private pending: (Buffer | string)[] | undefined;
  /** Whole frames (answers) waiting for the next write, in order; they leave before `pending`. */
  private outbox: (string | Buffer)[] | undefined;
  /** When the scheduled flush is due (FlushScheduler): 0 at the end of this turn; undefined: none. */
  private flushDue: number | undefined;
  private lastFlush = Number.NEGATIVE_INFINITY;
  /** encodeCursor(this.position) while pushes wait: a frame's cursor is usually its last item's. */
  private positionText: string | undefined;
  private submitting: Promise<void> = Promise.resolve();
  private queued = 0;
  /** The message and Welcome text of the submit frames waiting (queued), in all. */
  private queuedBytes = 0;
  /** The certificate expired while submissions waited: each is refused, then the stream closes. */
  private expired = false;
  /** The peer answered (a pong or any frame) since the last ping. */
  private alive = true;

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly socket: WebSocket,
    private readonly sessions: StreamSessions,
    private readonly raw?: Duplex,
  ) {
    socket.on("message", (data, isBinary) => {
      this.alive = true;
      void this.onFrame(data, isBinary);
    });
    socket.on("pong", () => (this.alive = true));
    socket.on("close", () => this.closed());
    socket.on("error", () => this.closed());
    this.authTimer = setTimeout(
      () => this.fail(STREAM_CLOSE.authFailed, new ProtocolError("unauthorized", "No auth frame in time.")),
      ctx.limits.streamAuthMs,
    );
    this.send({ type: "challenge", challenge: toBase64url(this.challenge!) });
  }

  /** Something new may be waiting for this device: read the inbox from the store. */
  wake(): void {
    if (this.state === "open") void this.pump();
  }

  /** A new entry in a group this session tracks: push it if it is the next one, else read. */
  onGroupEvent(e: GroupEvent): void {
    if (this.state !== "open") return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    const g = this.groups.get(e.groupId);
    const reached = g ? this.reached.get(g.key) : undefined;
    if (!g || reached === undefined) {
      void this.pump();
      return;
    }
    if (e.seq <= reached) return; // already sent
    if (!g.open || e.seq !== reached + 1 || e.message === undefined || e.notice || e.changed !== undefined) {
      void this.pump();
      return;
    }
    this.position.set(g.key, e.seq);
    this.reached.set(g.key, e.seq);
    let cursor = encodeCursor(this.position);
    this.positionText = cursor;
    // The same rule as a page whose full cursor would be too long: this item's own progress is safe to ack.
    if (cursor.length > ITEM_CURSOR_CHARS) cursor = encodeCursor(new Map([[g.key, e.seq]]));
    // The item's JSON up to its cursor is the same for every stream of this replica: made once per event.
    let head = headEvent === e ? headBytes : undefined;
    if (head === undefined) {
      const { cursor: _, ...item } = {
        kind: "message",
        group_id: e.groupId,
        seq: e.seq,
        epoch: e.epoch,
        sender: e.sender,
        message: e.message,
        cursor: "",
      } satisfies InboxItem;
      head = Buffer.from(`${JSON.stringify(item).slice(0, -1)},"cursor":"`, "utf8");
      headEvent = e;
      headBytes = head;
      // Once per message per replica, not per stream: the streams of one event share its lag to within
      // the turn, and ten observations a message were a measurable share of the push path.
      this.ctx.metrics.lag.observe(Math.max(0, this.ctx.now() - e.at) / 1000);
    }
    (this.pending ??= []).push(head, cursor);
    this.scheduleFlush(false);
  }

  /**
   * Makes sure a flush is coming: at the end of this event-loop turn, or, for pushes (`now` false) on a
   * stream that sent items less than pushCoalesceMs ago, when that hold ends. An answer cuts a hold
   * short: it leaves at the end of the turn and takes the held items with it (one write for both).
   */
  private scheduleFlush(now: boolean): void {
    if (this.flushDue !== undefined && (!now || this.flushDue === 0)) return;
    // Whole milliseconds, so that the holds of many streams share a timer.
    let due = now ? 0 : Math.ceil(this.lastFlush + this.ctx.limits.pushCoalesceMs);
    if (due !== 0 && due <= performance.now()) due = 0;
    this.flushDue = due;
    this.sessions.flushes.add(this, due);
  }

  /** Called by the FlushScheduler; a flush that was cut short or cancelled meanwhile is not due. */
  flushIfDue(due: number): void {
    if (this.flushDue === due) this.flush();
  }

  private cancelFlush(): void {
    this.flushDue = undefined;
  }

  /** Closes the stream (4001) once its device certificate has expired (StreamSessions.recheck). */
  closeIfExpired(nowSeconds: number): void {
    if (this.state !== "open" || !this.certificate || nowSeconds <= this.certificate.notAfter) return;
    // Submissions still waiting are refused first; the last answer closes the stream.
    this.expired = true;
    this.closeOnceAnswered();
  }

  /** Closes the stream (4001) if its device is not in the directory's answer for its account. */
  dropIfUnlisted(answer: RegisteredDevices): void {
    const device = this.certificate;
    if (this.state !== "open" || !device || isListedAs(answer, device.deviceIdText, device.accountKeyText)) {
      return;
    }
    this.fail(
      STREAM_CLOSE.authFailed,
      new ProtocolError("device_not_registered", "This device was removed from its account's device list."),
    );
  }

  /**
   * Called every streamPingMs: a stream silent since the last ping is dropped without a closing handshake
   * (its peer would not answer that either; ws would wait 30 s for it), else pinged again. Clients answer
   * pings by themselves (RFC 6455 §5.5.2; browsers and ws do).
   */
  pingOrDrop(): void {
    if (this.state === "closed") return;
    if (!this.alive) {
      this.closed();
      // 1006: what the peer, if it is still there, sees (no close frame).
      this.ctx.metrics.streamsClosed.inc({ code: "1006" });
      this.socket.terminate();
      return;
    }
    this.alive = false;
    this.socket.ping();
  }

  close(code: number, reason: string): void {
    if (this.state === "closed") return;
    this.closed();
    this.ctx.metrics.streamsClosed.inc({ code: String(code) });
    this.socket.close(code, reason);
  }

  private closed(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this.authTimer);
    this.cancelFlush();
    this.pending = undefined;
    this.outbox = undefined;
    this.sessions.forget(this);
  }

  /** Writes the waiting answers, then the pushed items in one `items` frame. */
  private flush(): void {
    this.cancelFlush();
    if (this.state === "closed") return;
    const frames = this.outbox ?? [];
    const pending = this.pending;
    this.outbox = undefined;
    this.pending = undefined;
    if (pending && this.state === "open") {
      this.lastFlush = performance.now();
      this.ctx.metrics.countPushed(pending.length / 2);
      frames.push(itemsFrame(pending, this.positionText ?? encodeCursor(this.position)));
      this.positionText = undefined;
    }
    if (frames.length > 0) this.write(frames);
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
    if (this.state !== "open" || frame.type === "auth") {
      this.fail(STREAM_CLOSE.badFrame, new ProtocolError("bad_request", "Only ack and submit frames now."));
      return;
    }
    if (frame.type === "submit") {
      this.enqueueSubmit(frame);
      return;
    }
    let cursor: Cursor;
    try {
      cursor = decodeCursor(frame.cursor);
    } catch (e) {
      this.failWith(e);
      return;
    }
    this.enqueueAck(cursor);
  }

  /** Acknowledgements that arrived while one was in flight, merged: per stream the highest position. */
  private nextAck: Map<string, number> | undefined;
  private acking = false;

  /**
   * One acknowledgement in flight per stream. `ack` frames cost a client nothing to send, and each is
   * store work: started as they came, any number of them could wait on Redis at once, each holding its
   * frame. Positions only rise, so those arriving meanwhile are taken together, as one, next.
   */
  private enqueueAck(cursor: Cursor): void {
    if (!this.acking) {
      void this.acknowledgeAll(cursor);
      return;
    }
    const merged = (this.nextAck ??= new Map<string, number>());
    for (const [stream, position] of cursor) merged.set(stream, Math.max(position, merged.get(stream) ?? 0));
    // No device has that many streams (decodeCursor's bound): the frames name streams that do not exist.
    if (merged.size > MAX_CURSOR_STREAMS) {
      this.nextAck = undefined;
      this.failWith(new ProtocolError("invalid_cursor", "The cursors name more streams than a device has."));
    }
  }

  private async acknowledgeAll(first: Cursor): Promise<void> {
    this.acking = true;
    let cursor: Cursor | undefined = first;
    try {
      while (cursor !== undefined && this.state === "open") {
        await acknowledge(this.ctx, this.reader!, cursor, {
          reached: this.reached,
          streamGroups: this.streamGroups,
        });
        cursor = this.nextAck;
        this.nextAck = undefined;
      }
    } catch (e) {
      this.failWith(e);
    } finally {
      this.acking = false;
      this.nextAck = undefined;
    }
  }

  private async authenticate(authorization: string, after: string | undefined): Promise<void> {
    this.state = "authenticating";
    let cert: DeviceCertificate;
    try {
      cert = await verifyRequest(
        authorization,
        {
          method: "GET",
          origin: this.ctx.config.publicUrl,
          pathAndQuery: "/v1/stream",
          body: this.challenge,
        },
        { nonces: this.ctx.nonces },
      );
    } catch (e) {
      if (e instanceof ProtocolError) this.fail(STREAM_CLOSE.authFailed, e);
      else this.failWith(e);
      return;
    }
    if (this.state !== "authenticating") return; // closed meanwhile
    let reader: InboxReader;
    try {
      reader = await inboxReader(this.ctx, cert);
    } catch (e) {
      this.refuseDevice(e);
      return;
    }
    if (this.state !== "authenticating") return;
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    this.challenge = undefined;
    try {
      // Checked against the store before `ready`: the stream pushes only what lies after `after`, and
      // acknowledges up to it without looking (ackCursor), so a position ahead of the inbox would lose
      // every message up to it.
      this.position =
        after === undefined
          ? new Map<string, number>()
          : new Map(await checkCursor(this.ctx.store, reader, decodeCursor(after)));
      this.positionText = undefined;
    } catch (e) {
      this.failWith(e);
      return;
    }
    if (this.state !== "authenticating") return;
    this.certificate = {
      deviceIdText: cert.deviceIdText,
      notAfter: cert.notAfter,
      accountKeyText: toBase64url(cert.accountKey),
    };
    this.reader = reader;
    this.state = "open";
    try {
      // Listening before the first read: nothing accepted after that read can pass unannounced.
      await this.sessions.listen(this, this.reader);
    } catch (e) {
      this.failWith(e);
      return;
    }
    if (this.state !== "open") return;
    this.send({ type: "ready", cursor: encodeCursor(this.position) });
    await this.pump();
  }

  /** Sends pages until the inbox is drained; an event during a read runs it once more. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    this.flush();
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
          this.positionText = undefined;
          if (page.items.length > 0) {
            this.send({ type: "items", items: page.items, cursor: encodeCursor(page.cursor) });
            const now = this.ctx.now();
            page.items.forEach((item, i) => {
              this.ctx.metrics.itemsOut.inc({ kind: item.kind, path: "stream" });
              if (item.kind === "behind_retention") this.ctx.metrics.behindRetention.inc();
              const at = page.acceptedAt[i]!;
              if (at > 0) this.ctx.metrics.lag.observe(Math.max(0, now - at) / 1000);
            });
          }
          if (page.more) continue;
          this.reached = page.reached;
          this.groups = page.groups;
          this.streamGroups = page.streamGroups;
          const open = new Set([...page.groups].filter(([, g]) => g.open).map(([id]) => id));
          const before = this.tracked;
          this.tracked = open;
          // Newly tracked groups: what was announced before the subscription took effect is read again.
          if ((await this.sessions.track(this, before, open)) > 0) this.again = true;
          break;
        }
      } while (this.again);
    } catch (e) {
      this.failWith(e);
    } finally {
      this.pumping = false;
    }
  }

  /** Refusals of submit frames over the queue's size, waiting for the answers before them. */
  private refusalsWaiting = 0;

  private enqueueSubmit(frame: SubmitFrame): void {
    // A frame holds its message and Welcome as text until it is answered: up to 2.7 MB each. One frame
    // alone is always taken, so no submission that fits a frame is refused for its size.
    const size = frame.message.length + (frame.welcome?.length ?? 0);
    const full =
      this.queued >= this.ctx.limits.streamSubmitQueue ||
      (this.queued > 0 && this.queuedBytes + size > this.ctx.limits.streamSubmitQueueBytes);
    if (full) {
      // A client that keeps sending while as many refusals wait as submissions does not read its answers:
      // it is cut off (to resume from its cursor) rather than held in memory frame by frame.
      if (this.refusalsWaiting >= this.ctx.limits.streamSubmitQueue) {
        this.close(STREAM_CLOSE.resume, "too many submit frames waiting; resume from your cursor");
        return;
      }
      const refusal: StreamServerFrame = {
        type: "refused",
        id: frame.id,
        ...new ProtocolError("rate_limited", "Too many submit frames waiting.", { retry_after: 1 }).toBody(),
      };
      // Behind the answers still to come: answers are in frame order, this one too.
      this.refusalsWaiting++;
      this.submitting = this.submitting.then(() => {
        this.refusalsWaiting--;
        this.answer(refusal);
        this.closeOnceAnswered();
      });
      return;
    }
    this.queued++;
    this.queuedBytes += size;
    // One at a time, in frame order: a device's messages are ordered as it sent them.
    this.submitting = this.submitting.then(async () => {
      try {
        await this.submit(frame);
      } finally {
        this.queued--;
        this.queuedBytes -= size;
        this.closeOnceAnswered();
      }
    });
  }

  /** After the certificate expired: the stream closes once every submit frame waiting is answered. */
  private closeOnceAnswered(): void {
    if (this.expired && this.queued === 0 && this.refusalsWaiting === 0) {
      this.fail(STREAM_CLOSE.authFailed, CERTIFICATE_EXPIRED);
    }
  }

  private async submit(frame: SubmitFrame): Promise<void> {
    if (this.state !== "open") return;
    const cert = this.certificate!;
    // Wall-clock time, as for every request signature (the injected clock drives retention only).
    if (this.expired || Math.floor(Date.now() / 1000) > cert.notAfter) {
      // Refused in so many words, as over HTTP, this frame and every one already waiting behind it; the
      // stream closes once they are answered (enqueueSubmit). The client knows at once that these
      // messages were not taken, instead of settling unknown outcomes minutes later.
      this.expired = true;
      this.answer({ type: "refused", id: frame.id, ...CERTIFICATE_EXPIRED.toBody() });
      return;
    }
    try {
      const accepted = await submitMessage(
        this.ctx,
        frame.group_id,
        cert,
        {
          message: fromBase64url(frame.message, LIMITS.mlsMessageBytes),
          text: frame.message,
          welcome:
            frame.welcome === undefined ? undefined : fromBase64url(frame.welcome, LIMITS.mlsMessageBytes),
        },
        "stream",
      );
      this.answer({ type: "submitted", id: frame.id, ...accepted });
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.answer({ type: "refused", id: frame.id, ...e.toBody() });
        return;
      }
      this.ctx.log.warn({ err: errorSummary(e) }, "stream submit failed");
      const code = isStoreFailure(e) ? "store_unavailable" : "internal";
      this.answer({ type: "refused", id: frame.id, ...new ProtocolError(code).toBody() });
    }
  }

  /** Sends a frame now, after the answers and pushed items waiting (so nothing overtakes them). */
  private send(frame: StreamServerFrame): void {
    if (this.state === "closed") return;
    (this.outbox ??= []).push(JSON.stringify(frame));
    this.flush();
  }

  /** An answer to a `submit` frame: sent at the end of this event-loop turn, in order with the others. */
  private answer(frame: StreamServerFrame): void {
    if (this.state === "closed") return;
    (this.outbox ??= []).push(JSON.stringify(frame));
    this.scheduleFlush(true);
  }

  /** Text frames, in order, in one write to the TCP socket (each ws send alone is one system call). */
  private write(frames: readonly (string | Buffer)[]): void {
    // One frame is one write already (ws corks its header and payload together).
    const cork = frames.length > 1 ? this.raw : undefined;
    cork?.cork();
    for (const frame of frames) this.socket.send(frame, { binary: false });
    cork?.uncork();
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
    this.ctx.log.warn({ err: errorSummary(e) }, "stream failed");
    this.close(STREAM_CLOSE.resume, "try again");
  }

  /** The directory does not list the device (4001), or could not be asked (4000: come back later). */
  private refuseDevice(e: unknown): void {
    if (e instanceof ProtocolError && e.code === "directory_unavailable") {
      this.fail(STREAM_CLOSE.resume, e);
    } else if (e instanceof ProtocolError && e.status === 403) {
      this.fail(STREAM_CLOSE.authFailed, e);
    } else {
      this.failWith(e);
    }
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

export type { Cursor };
