import type { FastifyInstance, FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import type { DeviceCertificate } from "@mastodon-mls/bridge";
import { ProtocolError } from "@mastodon-mls/protocol";
import { authenticateDevice } from "@mastodon-mls/service-kit";
import type { DirectoryContext } from "../context.js";
import { bearerToken } from "../mastodon/bearerToken.js";
import type { TokenAccount } from "../mastodon/tokenVerifier.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Set by `requireAccount` on bearer-token routes. */
    account: TokenAccount | null;
    /** Set by `requireDevice` on device-signed routes. */
    device: DeviceCertificate | null;
  }
}

export function decorateAuthentication(app: FastifyInstance): void {
  app.decorateRequest("account", null);
  app.decorateRequest("device", null);
}

// Authentication runs as a preValidation hook: after the body is read (signatures cover its bytes),
// before the schema is checked, so an unauthenticated caller learns nothing about what it sent.

export function requireAccount(ctx: DirectoryContext): preValidationAsyncHookHandler {
  return async (req) => {
    req.account = await ctx.tokens.verify(bearerToken(req.headers.authorization));
  };
}

export function requireDevice(ctx: DirectoryContext): preValidationAsyncHookHandler {
  return async (req) => {
    req.device = await authenticateDevice(req, {
      origin: ctx.config.publicUrl,
      nonces: ctx.nonces,
      now: ctx.now,
    });
  };
}

export function accountOf(req: FastifyRequest): TokenAccount {
  if (!req.account) throw new ProtocolError("unauthorized");
  return req.account;
}

export function deviceOf(req: FastifyRequest): DeviceCertificate {
  if (!req.device) throw new ProtocolError("unauthorized");
  return req.device;
}
