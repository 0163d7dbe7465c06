import type { FastifyInstance, FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import type { DeviceCertificate, NonceStore } from "@mastodon-mls/bridge";
import { ProtocolError, toBase64url } from "@mastodon-mls/protocol";
import { authenticateDevice } from "@mastodon-mls/service-kit";
import type { DirectoryContext } from "../context.js";
import { bearerToken } from "../mastodon/bearerToken.js";
import type { TokenAccount } from "../mastodon/tokenVerifier.js";
import { refuse, type Hit, type Refusal, type RequesterLimit } from "../rateLimits.js";

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
// before the schema is checked, so an unauthenticated caller learns nothing about what it sent. The rate
// limits key on who the request was authenticated as, so they are counted in the same hook, right after
// (garbage counts too; an unauthenticated request spends nobody's budget).

/** A bearer-token route, counted against the `account` limit of the token's account. */
export function requireAccount(ctx: DirectoryContext): preValidationAsyncHookHandler {
  const counted = ctx.config.rateLimits.enabled;
  return async (req, reply) => {
    const account = await ctx.tokens.verify(bearerToken(req.headers.authorization));
    req.account = account;
    if (!counted) return;
    const admission = await ctx.admission.admit(req, undefined, [{ limit: "account", key: account.acct }]);
    if (admission !== "replayed" && admission.refusal) {
      refuse(reply, ctx.metrics, ctx.config.rateLimits, admission.refusal);
    }
  };
}

/**
 * A device-signed route, counted against `limits` (keyed on the requesting device, or on its certificate's
 * domain and account key: `requesterAccountKey`). The admission spends the request's nonce, then counts it against each limit in order, only
 * once the signature checked out: a replay is refused there and spends no budget, and a request over
 * one limit is not counted against the next.
 */
export function requireDevice(
  ctx: DirectoryContext,
  limits: readonly Exclude<RequesterLimit, "account">[],
): preValidationAsyncHookHandler {
  const counted = ctx.config.rateLimits.enabled ? limits : [];
  return async (req, reply) => {
    let refusal: Refusal | undefined;
    const nonces: NonceStore = {
      async claim(key, ttlSeconds, device) {
        const hits: Hit[] = counted.map((limit) => ({
          limit,
          key: limit === "device" ? device.deviceIdText : requesterAccountKey(device),
        }));
        const admission = await ctx.admission.admit(req, { key, ttlSeconds }, hits);
        if (admission === "replayed") return false;
        refusal = admission.refusal;
        return true;
      },
    };
    req.device = await authenticateDevice(req, { origin: ctx.config.publicUrl, nonces, now: ctx.now });
    if (refusal) refuse(reply, ctx.metrics, ctx.config.rateLimits, refusal);
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

/**
 * The key of the `domain` limit: the requester certificate's domain and the account key that signed it.
 * Certificates are self-issued, so a domain alone is anyone's to name, and a budget keyed on it let
 * minted certificates for a domain refuse the claims of that domain's real devices. Only the holder of
 * an account key can sign certificates under it, so whoever spends this budget spends their own (D4).
 */
export function requesterAccountKey(device: DeviceCertificate): string {
  return `${domainOf(device.acct)}/${toBase64url(device.accountKey)}`;
}

/** The domain of a canonical `user@domain`. */
export function domainOf(acct: string): string {
  return acct.slice(acct.lastIndexOf("@") + 1);
}
