import { request as httpRequest, type Agent, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import type { LookupFunction } from "node:net";

// One HTTP request and its whole answer, with one deadline and a cap on the answer's size (NET-5, NET-6):
// what the safe GET for lookups (safeHttp.ts) and the client's requests to our services are built on.
// node:http rather than fetch: on loopback a fetch costs 0.6–0.9 ms more CPU per request here.

export type TransportFailure = "policy" | "network" | "timeout" | "too-large" | "redirects";

export class TransportError extends Error {
  constructor(
    readonly failure: TransportFailure,
    message: string,
  ) {
    super(message);
    this.name = "TransportError";
  }
}

export interface HttpExchange {
  method: string;
  headers: Record<string, string>;
  body?: Uint8Array | undefined;
  /** From the first byte sent to the last byte of the answer. */
  timeoutMs: number;
  /** The answer's body, declared or read. */
  maxBytes: number;
  /** Connection pooling (false: a connection of its own). */
  agent: Agent | false;
  /** Where the host name goes (e.g. an address checked beforehand). */
  lookup?: LookupFunction;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Throws `TransportError` ("network", "timeout", "too-large"); any status is an answer. */
export function exchange(url: URL, x: HttpExchange): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    let settled = false;
    const finish = (err: Error | undefined, value?: HttpAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err !== undefined) {
        req.destroy();
        reject(err);
      } else resolve(value!);
    };
    const tooLarge = () => new TransportError("too-large", `the answer is larger than ${x.maxBytes} bytes`);
    const headers =
      x.body === undefined ? x.headers : { ...x.headers, "content-length": String(x.body.byteLength) };
    const req = request(
      url,
      { method: x.method, headers, agent: x.agent, ...(x.lookup === undefined ? {} : { lookup: x.lookup }) },
      (res) => {
        const declared = Number(res.headers["content-length"] ?? "0");
        if (declared > x.maxBytes) {
          finish(tooLarge());
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.byteLength;
          if (size > x.maxBytes) {
            finish(tooLarge());
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () =>
          finish(undefined, {
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on("error", (e) => finish(new TransportError("network", e.message)));
      },
    );
    const timer = setTimeout(
      () => finish(new TransportError("timeout", `no complete answer within ${x.timeoutMs} ms`)),
      x.timeoutMs,
    );
    req.on("error", (e) => finish(new TransportError("network", e.message)));
    req.end(x.body);
  });
}
