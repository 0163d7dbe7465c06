import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { FastifyInstance } from "fastify";
import { errorCatalogue, type ErrorCode } from "@mastodon-mls/protocol";
import { body } from "./errorHandler.js";

/** A request, headers and body, must have arrived within this; otherwise 408 and the connection closes. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** A connection on which nothing moved, either way, for this long once its answer began is closed. */
export const IDLE_TIMEOUT_MS = 60_000;

/**
 * Node answers what never became a request (malformed HTTP, headers too large, a request that did not
 * arrive in time) before any route or error handler runs; Fastify's own answer is not in the catalogue.
 * This one is: clients branch on `error` codes, whatever went wrong.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  // A reset connection has no one to answer.
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const code: ErrorCode =
    err.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? "request_timeout"
      : err.code === "HPE_HEADER_OVERFLOW"
        ? "headers_too_large"
        : "bad_request";
  this.log.debug({ err: { code: err.code, message: err.message } }, "client error");
  // Only while no answer to a request on this connection has begun (Node's own rule).
  const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (!socket.writable || current?.headersSent) {
    socket.destroy();
    return;
  }
  const status = errorCatalogue[code].status;
  const json = JSON.stringify(body(code));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
  );
  // What the client is still sending (the rest of an over-long request line) is read and dropped: a socket
  // closed with unread bytes resets the connection, and the client loses the answer before reading it.
  socket.resume();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** How long a connection answered above may take to read the answer before it is closed. */
const LINGER_MS = 1000;
