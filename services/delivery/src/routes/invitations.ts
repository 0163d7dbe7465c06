import {
  InvitationBody,
  InvitationResponse,
  ProtocolError,
  formatAcct,
  parseAcct,
} from "@mastodon-mls/protocol";
import type { ServiceApp } from "@mastodon-mls/service-kit";
import type { DeliveryContext } from "../context.js";
import { requireInvitationSender } from "../deviceAccess.js";
import { parseGroupId } from "../submit.js";
import { deviceErrors, refuseRawBodies, requireDeviceSignature, signer } from "./auth.js";

export function invitationRoutes(ctx: DeliveryContext) {
  return async (app: ServiceApp) => {
    requireDeviceSignature(app, ctx);
    refuseRawBodies(app);

    app.post(
      "/v1/invitations",
      {
        schema: {
          summary: "Queue a pointer to a group for every device of an account of this instance",
          description:
            "A sender of this instance must be a device its directory lists for the account " +
            "(`403 device_not_registered`; `503 directory_unavailable` when the directory cannot be asked " +
            "or DIRECTORY_URL is unset). Rate-limited per sending account (RATE_INVITATIONS per " +
            "RATE_WINDOW_SECONDS).",
          security: [{ device: [] }],
          body: InvitationBody,
          response: { 201: InvitationResponse, ...deviceErrors },
        },
      },
      async (req, reply) => {
        const from = signer(req);
        const acct = parseAcct(req.body.acct);
        if (acct.domain !== ctx.config.instanceDomain) throw new ProtocolError("foreign_account");
        const hub = new URL(req.body.hub);
        if (hub.protocol !== "https:" && hub.protocol !== "http:") {
          throw new ProtocolError("bad_request", "The hub must be an http(s) URL.");
        }
        parseGroupId(req.body.group_id);
        // Before the rate limit: a device that is not the account's must not spend the account's budget.
        await requireInvitationSender(ctx, from);
        // Per sending account: its devices share one budget.
        await ctx.rateLimits.take("invitations", from.acct);
        const target = formatAcct(acct);
        await ctx.store.queueInvitation(
          target,
          {
            from: from.acct,
            from_device: from.deviceIdText,
            hub: req.body.hub,
            group_id: req.body.group_id,
          },
          ctx.now(),
        );
        ctx.notifier.publish({ kind: "account", acct: target });
        return reply.status(201).send({ queued: true as const });
      },
    );
  };
}
