import type { FastifyInstance } from "fastify";
import { ProtocolError } from "@mastodon-mls/protocol";

declare module "fastify" {
  interface FastifyRequest {
    /** The body bytes exactly as received: request signatures cover them (DESIGN §7). */
    rawBody?: Buffer;
  }
}

/** The media type of raw MLS bytes (RFC 9420 §17.10). */
export const MLS_MEDIA_TYPE = "message/mls";

/**
 * Replaces the JSON parser with one that keeps the raw bytes, and accepts `message/mls` as a Buffer.
 * Every other media type is refused with 415 by Fastify itself.
 */
export function installBodyParsers(app: FastifyInstance): void {
  app.removeContentTypeParser(["application/json", "text/plain"]);
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (req, buf, done) => {
    const raw = buf as Buffer;
    req.rawBody = raw;
    if (raw.byteLength === 0) {
      done(new ProtocolError("invalid_body", "The JSON body is empty."), undefined);
      return;
    }
    try {
      done(null, JSON.parse(raw.toString("utf8")) as unknown);
    } catch {
      done(new ProtocolError("invalid_body", "The body is not valid JSON."), undefined);
    }
  });
  app.addContentTypeParser(MLS_MEDIA_TYPE, { parseAs: "buffer" }, (req, buf, done) => {
    req.rawBody = buf as Buffer;
    done(null, buf);
  });
}
