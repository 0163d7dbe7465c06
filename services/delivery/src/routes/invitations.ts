import {
  ErrorBodySchema,
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
            "or DIRECTORY_URL is unset). Rate-limited per sending account and per sending device " +
            "(RATE_INVITATIONS each) and per receiving account (RATE_INVITATIONS_RECEIVED), per " +
            "RATE_WINDOW_SECONDS; `422 too_many_invitations` while MAX_QUEUED_INVITATIONS wait for the " +
            "account.",
          security: [{ device: [] }],
          body: InvitationBody,
          response: {
            201: InvitationResponse,
            422: ErrorBodySchema.describe("too_many_invitations"),
            ...deviceErrors,
          },
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
        // Per sending device as well as per account: a sender of another instance is not checked against
        // any directory, so it could name a made-up account, with a budget of its own, for each request.
        await ctx.rateLimits.take("invitations", from.deviceIdText);
        // Before the account's limit: a device that is not the account's must not spend its budget.
        await requireInvitationSender(ctx, from);
        // Per sending account: its devices share one budget.
        await ctx.rateLimits.take("invitations", from.acct);
        // Per receiving account, from everyone: device keys cost nothing, so the limits above do not
        // bound what one account is sent. Taken last, so that senders over their own limits spend none of it.
        const target = formatAcct(acct);
        await ctx.rateLimits.take("invitationsReceived", target);
        const queued = await ctx.store.queueInvitation(
          target,
          {
            from: from.acct,
            from_device: from.deviceIdText,
            hub: req.body.hub,
            group_id: req.body.group_id,
          },
          ctx.now(),
          ctx.config.maxQueuedInvitations,
        );
        // Invitations go once every device of the account read them (acknowledge.ts), or by age: without
        // this cap an account with a device that does not read would hold whatever the limit above lets
        // through in a whole RETENTION_SECONDS.
        if (queued === undefined) {
          throw new ProtocolError(
            "too_many_invitations",
            `${target} has ${ctx.config.maxQueuedInvitations} invitations waiting at this hub already.`,
          );
        }
        ctx.notifier.publish({ kind: "account", acct: target });
        return reply.status(201).send({ queued: true as const });
      },
    );
  };
}
