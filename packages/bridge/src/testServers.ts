// Small local servers for tests of what a fake Mastodon cannot be made to do: lie about one field of an
// answer, count connections, or answer with a script. Real HTTP on port 0; closed by the caller.
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";

export interface Closable {
  url: string;
  port: number;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;
/** Rewrites a JSON answer of the proxied server, by path (without query). */
export type Mutations = Record<string, (body: Json, req: IncomingMessage) => Json>;

function listen(server: ReturnType<typeof createHttpServer>): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

function closer(server: { close(cb: () => void): void; closeAllConnections?: () => void }) {
  return () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A proxy in front of a fake instance that presents itself as that instance: every mention of the
 * target's origin in an answer is replaced by its own, then `mutate` may change one thing.
 */
export async function mutatingProxy(target: string, mutate: Mutations = {}): Promise<Closable> {
  let self = "";
  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const body = await readBody(req);
      const headers = { ...req.headers };
      for (const h of ["host", "content-length", "connection", "transfer-encoding", "accept-encoding"])
        delete headers[h];
      const answer = await fetch(new URL(req.url ?? "/", target), {
        method: req.method ?? "GET",
        headers: headers as Record<string, string>,
        body: body.byteLength > 0 ? new Uint8Array(body) : undefined,
        redirect: "manual",
      });
      let text = (await answer.text()).split(target).join(self);
      const path = new URL(req.url ?? "/", self).pathname;
      const rewrite = mutate[path];
      if (rewrite !== undefined && answer.ok) text = JSON.stringify(rewrite(JSON.parse(text) as Json, req));
      res.writeHead(answer.status, {
        "content-type": answer.headers.get("content-type") ?? "application/json",
      });
      res.end(text);
    })().catch(() => res.destroy());
  });
  const port = await listen(server);
  self = `http://127.0.0.1:${port}`;
  return { url: self, port, close: closer(server) };
}

/** A server answering by a handler; for redirects, sizes and hangs. */
export async function scriptedServer(
  handler: (req: IncomingMessage, res: ServerResponse, url: string) => void,
): Promise<Closable> {
  let self = "";
  const server = createHttpServer((req, res) => handler(req, res, self));
  const port = await listen(server);
  self = `http://127.0.0.1:${port}`;
  return { url: self, port, close: closer(server) };
}

/** A TCP listener that only counts connections: proof that a refused request never connected. */
export async function countingListener(): Promise<Closable & { connections(): number }> {
  let count = 0;
  const server = createTcpServer((socket) => {
    count++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connections: () => count,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
