import type { FastifyRequest } from "fastify";
import { ErrorBodySchema, ProtocolError } from "@mastodon-mls/protocol";
import type { DeviceCertificate } from "@mastodon-mls/bridge";
import { authenticateDevice, type ServiceApp } from "@mastodon-mls/service-kit";
import type { DeliveryContext } from "../context.js";

declare module "fastify" {
  interface FastifyRequest {
    /** The verified certificate of the device that signed this request. */
    device?: DeviceCertificate;
  }
}

/**
 * Every /v1 route is device-signed (DESIGN §7). The signature is checked before the body is validated or
 * anything is looked up, so an unauthenticated caller learns nothing about groups or inboxes.
 */
export function requireDeviceSignature(app: ServiceApp, ctx: DeliveryContext): void {
  app.addHook("preValidation", async (req) => {
    req.device = await authenticateDevice(req, { origin: ctx.config.publicUrl, nonces: ctx.nonces });
  });
}

/** Only the message route takes `message/mls`; everywhere else raw bytes are the wrong media type. */
export function refuseRawBodies(app: ServiceApp): void {
  app.addHook("preValidation", async (req) => {
    if (Buffer.isBuffer(req.body)) throw new ProtocolError("unsupported_media_type");
  });
}

export function signer(req: FastifyRequest): DeviceCertificate {
  if (!req.device) throw new ProtocolError("unauthorized");
  return req.device;
}

/** Error answers every device-signed route may give (shape only; the codes are in docs/errors.md). */
export const deviceErrors = {
  400: ErrorBodySchema.describe("bad_request, invalid_body, invalid_encoding, invalid_cursor, …"),
  401: ErrorBodySchema.describe("unauthorized, auth_invalid, auth_expired, auth_replayed"),
  403: ErrorBodySchema.describe("not_a_member, device_not_registered"),
  404: ErrorBodySchema.describe("unknown_group, unknown_commit, foreign_account"),
  413: ErrorBodySchema.describe("payload_too_large"),
  415: ErrorBodySchema.describe("unsupported_media_type"),
  429: ErrorBodySchema.describe("rate_limited {retry_after}, with a Retry-After header"),
  503: ErrorBodySchema.describe("store_unavailable, shutting_down, directory_unavailable"),
};
