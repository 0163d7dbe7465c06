import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { FastifyInstance } from "fastify";
import { errorCatalogue, type ErrorCode } from "@mastodon-mls/protocol";
import { body } from "./errorHandler.js";

/** A request, headers and body, must have arrived within this; otherwise 408 and the connection closes. */
export const REQUEST_TIMEOUT_MS = 30_000;

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
  // Only on a connection that can still take an answer and has not started one (Node's own rule).
  if (socket.writable && (socket as Duplex & { bytesWritten?: number }).bytesWritten === 0) {
    const status = errorCatalogue[code].status;
    const json = JSON.stringify(body(code));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
    );
  }
  socket.destroy();
}
