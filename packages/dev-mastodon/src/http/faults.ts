// Failures of the instance or of what stands in front of it, for testing clients that must tell "the
// instance is unreachable" from "the answer is no". A fault applies before anything else (routing,
// authentication, rate limits), as a failing proxy or a dead backend would.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { SERVER_ERROR_PAGE } from "./errors.js";

export type FaultMode =
  /** Normal service. */
  | "none"
  /** nginx's HTML "502 Bad Gateway" page: the proxy is up, Mastodon (Puma) is not. */
  | "html502"
  /** Mastodon's HTML 500 page, as an unhandled exception gives. */
  | "500"
  /** JSON 503, as Mastodon answers when a dependency is briefly unavailable. */
  | "503"
  /** The connection is accepted and no answer ever comes (until the fault changes or the server closes). */
  | "hang"
  /** The connection is closed without an answer. */
  | "reset";

export interface FaultOptions {
  /** Limit the fault to request paths starting with this (e.g. "/.well-known/"). */
  readonly pathPrefix?: string;
}

const NGINX_502 =
  "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" +
  "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

export class Faults {
  private mode: FaultMode = "none";
  private pathPrefix: string | undefined;
  private waiters = new Set<() => void>();
  private watchers: Array<{ count: number; resolve: () => void }> = [];
  private closed = false;

  /** Requests being held by the "hang" fault right now. */
  get held(): number {
    return this.waiters.size;
  }

  /** Resolves once at least `count` requests are being held (tests use it instead of sleeping). */
  untilHeld(count: number): Promise<void> {
    if (this.waiters.size >= count) return Promise.resolve();
    return new Promise((resolve) => this.watchers.push({ count, resolve }));
  }

  private hold(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiters.add(resolve);
      const ready = this.watchers.filter((w) => this.waiters.size >= w.count);
      this.watchers = this.watchers.filter((w) => this.waiters.size < w.count);
      for (const w of ready) w.resolve();
    });
  }

  set(mode: FaultMode, options: FaultOptions = {}): void {
    this.mode = mode;
    this.pathPrefix = options.pathPrefix;
    this.release();
  }

  /** Lets hanging requests go: they are answered under whatever fault is now set. */
  private release(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** On close: hanging requests are dropped with their connections. */
  close(): void {
    this.closed = true;
    this.release();
  }

  private active(req: FastifyRequest): FaultMode {
    if (this.mode === "none") return "none";
    if (this.pathPrefix !== undefined && !req.url.startsWith(this.pathPrefix)) return "none";
    return this.mode;
  }

  private drop(req: FastifyRequest, reply: FastifyReply): FastifyReply {
    reply.hijack();
    req.raw.socket.destroy();
    return reply;
  }

  /** Applies the current fault; returns a reply when the request must not reach the routes. */
  async apply(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    for (;;) {
      if (this.closed) return this.drop(req, reply);
      const mode = this.active(req);
      switch (mode) {
        case "none":
          return undefined;
        case "html502":
          return reply.code(502).type("text/html").send(NGINX_502);
        case "500":
          return reply.code(500).type("text/html; charset=utf-8").send(SERVER_ERROR_PAGE);
        case "503":
          return reply
            .code(503)
            .type("application/json; charset=utf-8")
            .send(
              JSON.stringify({
                error: "There was a temporary problem serving your request, please try again",
              }),
            );
        case "reset":
          return this.drop(req, reply);
        case "hang":
          await this.hold();
      }
    }
  }
}

export function installFaults(app: FastifyInstance, faults: Faults): void {
  app.addHook("onRequest", async (req, reply) => {
    const answered = await faults.apply(req, reply);
    if (answered !== undefined) return answered;
  });
}
