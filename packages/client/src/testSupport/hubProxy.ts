import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";

// Test support: a real HTTP proxy in front of a real service, for tests that need to see or steer what a
// client asks. Every request goes through `intercept` first, which may hold it (await anything) and then
// forward it or answer in the service's place; WebSocket upgrades (the hub's `/v1/stream`) are passed
// through untouched. The service must believe it is reached at the proxy's URL: start it with
// `PUBLIC_URL` = `proxy.url` (device signatures cover the origin the client uses).

export interface ProxiedRequest {
  method: string;
  /** Path and query as sent. */
  path: string;
  body: Buffer;
}

/** An answer given in the service's place. */
export interface StandIn {
  status: number;
  body: unknown;
}

export interface Exchange {
  method: string;
  path: string;
  body: Buffer;
  /** The status the client got; `forwarded` false when `intercept` answered it. */
  status: number;
  forwarded: boolean;
}

export class HubProxy {
  private server: Server | undefined;
  private readonly upgraded = new Set<Socket>();
  private readonly watchers: { match: (e: Exchange) => boolean; resolve: (e: Exchange) => void }[] = [];
  url = "";
  /** Where requests go (`http://host:port`); set before the first request. */
  target = "";
  /** Every answered request, in order of answers. */
  readonly exchanges: Exchange[] = [];
  /** Decides each request: undefined forwards it, a `StandIn` answers it here. May hold it first. */
  intercept: (req: ProxiedRequest) => Promise<StandIn | undefined> | StandIn | undefined = () => undefined;
  /**
   * Decides the answer to a forwarded request, once the service gave it: undefined passes it on, a
   * `StandIn` replaces it (the service did the work; the client hears something else, e.g. a lost answer).
   */
  replaceAnswer: (req: ProxiedRequest, status: number) => StandIn | undefined = () => undefined;
  /**
   * Rewrites the body of a forwarded answer the service gave (and `replaceAnswer` kept): what a hostile
   * hub could say instead, e.g. another label on an inbox item. The bytes as they came by default.
   */
  rewriteBody: (req: ProxiedRequest, status: number, body: Buffer) => Buffer = (_req, _status, body) => body;

  /** Requests it accepts get no answer at all: their connection is cut, as by a hub that went away. */
  drop: (req: ProxiedRequest) => boolean = () => false;

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (this.drop({ method: req.method ?? "GET", path: req.url ?? "/", body: Buffer.concat(chunks) })) {
          req.socket.destroy();
          return;
        }
        this.handle(req, Buffer.concat(chunks), res).catch((e: unknown) => {
          if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
          res.end(`proxy: ${String(e)}`);
        });
      });
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.upgrade(req, socket, head),
    );
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.upgraded) s.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) =>
      this.server === undefined ? resolve() : this.server.close(() => resolve()),
    );
  }

  /**
   * Resolves with the first exchange that `match` accepts: of those answered from index `since` of
   * `exchanges` on (default: all), or to come.
   */
  waitFor(match: (e: Exchange) => boolean, since = 0): Promise<Exchange> {
    const seen = this.exchanges.slice(since).find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.watchers.push({ match, resolve }));
  }

  private record(e: Exchange): void {
    this.exchanges.push(e);
    for (const w of [...this.watchers]) {
      if (!w.match(e)) continue;
      this.watchers.splice(this.watchers.indexOf(w), 1);
      w.resolve(e);
    }
  }

  private async handle(req: IncomingMessage, body: Buffer, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const standIn = await this.intercept({ method, path, body });
    if (standIn !== undefined) {
      res.writeHead(standIn.status, { "content-type": "application/json" });
      res.end(JSON.stringify(standIn.body));
      this.record({ method, path, body, status: standIn.status, forwarded: false });
      return;
    }
    const target = new URL(this.target);
    await new Promise<void>((resolve, reject) => {
      const out = request(
        {
          host: target.hostname,
          port: target.port,
          method,
          path,
          headers: { ...req.headers, host: target.host },
        },
        (answer) => {
          const chunks: Buffer[] = [];
          answer.on("data", (c: Buffer) => chunks.push(c));
          answer.on("error", reject);
          answer.on("end", () => {
            const status = answer.statusCode ?? 502;
            const replaced = this.replaceAnswer({ method, path, body }, status);
            if (replaced === undefined) {
              const out = this.rewriteBody({ method, path, body }, status, Buffer.concat(chunks));
              const { "transfer-encoding": _chunked, ...headers } = answer.headers;
              res.writeHead(status, { ...headers, "content-length": String(out.length) });
              res.end(out);
            } else {
              res.writeHead(replaced.status, { "content-type": "application/json" });
              res.end(JSON.stringify(replaced.body));
            }
            this.record({ method, path, body, status: replaced?.status ?? status, forwarded: true });
            resolve();
          });
        },
      );
      out.on("error", reject);
      out.end(body);
    });
  }

  /** A WebSocket upgrade: the raw bytes both ways, from the request line on. */
  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const target = new URL(this.target);
    const upstream = connect(Number(target.port), target.hostname);
    this.upgraded.add(socket);
    this.upgraded.add(upstream);
    const drop = () => {
      socket.destroy();
      upstream.destroy();
      this.upgraded.delete(socket);
      this.upgraded.delete(upstream);
    };
    socket.on("error", drop);
    upstream.on("error", drop);
    socket.on("close", drop);
    upstream.on("close", drop);
    upstream.on("connect", () => {
      const lines = [`${req.method ?? "GET"} ${req.url ?? "/"} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!;
        lines.push(`${name}: ${name.toLowerCase() === "host" ? target.host : req.rawHeaders[i + 1]!}`);
      }
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
  }
}
