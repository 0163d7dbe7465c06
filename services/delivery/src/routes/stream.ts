import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { ErrorBodySchema, ProtocolError } from "@mastodon-mls/protocol";
import type { ServiceApp } from "@mastodon-mls/service-kit";
import type { StreamSessions } from "../stream.js";

/** GET /v1/stream: the WebSocket inbox. The upgrade is unauthenticated; the first frame is signed. */
export function streamRoutes(sessions: StreamSessions) {
  // The HTTP response of each upgrade, until its WebSocket is handed over.
  const responses = new WeakMap<IncomingMessage, ServerResponse>();
  return async (app: ServiceApp) => {
    // app.route, not app.get(…, {websocket: true}): @fastify/websocket hides `websocket: true` routes
    // from the OpenAPI document; with a `wsHandler` the route stays in it.
    app.route({
      method: "GET",
      url: "/v1/stream",
      schema: {
        summary: "WebSocket: the inbox pushed, and submissions (StreamServerFrame / StreamClientFrame)",
        description:
          "Upgrade to a WebSocket. The server sends `challenge`; the client's first frame is `auth` (an " +
          "MLS-Device authorization signed over GET /v1/stream with the challenge bytes as the body, and " +
          "an optional `after` cursor). Then the server pushes `items` frames; the client may send `ack` " +
          "and `submit` frames (answered by `submitted` / `refused`, as POST …/messages). Close codes: " +
          "4000 resume (shutdown, or the client read too slowly), 4001 authentication failed, 4002 bad " +
          "frame (also an invalid cursor, in `auth` or `ack`: as for `GET /v1/inbox`, one beyond the " +
          "inbox). The server pings every 30 s and drops a stream that does not answer (1006, no close " +
          "frame). docs/protocol.md §6.",
        response: {
          400: ErrorBodySchema.describe("bad_request: not a WebSocket upgrade, or a malformed one"),
        },
      },
      onRequest: (req, reply, done) => {
        // ws answers a malformed upgrade itself, in text/html; this one answers in the catalogue's JSON.
        if (req.headers.upgrade?.toLowerCase() === "websocket" && !wellFormedUpgrade(req.headers)) {
          done(new ProtocolError("bad_request", "Not a well-formed WebSocket upgrade (RFC 6455 §4.1)."));
          return;
        }
        responses.set(req.raw, reply.raw);
        done();
      },
      wsHandler: (socket, req) => {
        // An upgraded request's HTTP response never finishes, so Node leaves it attached to the TCP socket,
        // and with it Fastify's request and reply and the upgrade's headers: kilobytes per idle stream.
        // Detach it, as Node does when a response finishes; and drop @fastify/websocket's own `error`
        // listener, which closes over the same request and reply (the session handles errors itself).
        const response = responses.get(req.raw);
        if (response && req.raw.socket) response.detachSocket(req.raw.socket);
        responses.delete(req.raw);
        socket.removeAllListeners("error");
        sessions.open(socket, req.raw.socket);
      },
      handler: async () => {
        throw new ProtocolError("bad_request", "GET /v1/stream is a WebSocket: send an Upgrade request.");
      },
    });
  };
}

/** What ws requires of an upgrade's own headers: a 16-byte base64 key and version 13 (or 8). */
function wellFormedUpgrade(headers: IncomingHttpHeaders): boolean {
  const key = headers["sec-websocket-key"];
  const version = headers["sec-websocket-version"];
  return (
    typeof key === "string" && /^[+/0-9A-Za-z]{22}==$/.test(key) && (version === "13" || version === "8")
  );
}
