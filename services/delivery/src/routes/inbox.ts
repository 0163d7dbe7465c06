import { AckBody, AckResponse, InboxQuery, InboxResponse } from "@mastodon-mls/protocol";
import type { ServiceApp } from "@mastodon-mls/service-kit";
import { acknowledge } from "../acknowledge.js";
import type { DeliveryContext } from "../context.js";
import { decodeCursor, encodeCursor } from "../cursor.js";
import { inboxReader } from "../deviceAccess.js";
import { readInbox } from "../inbox.js";
import { deviceErrors, refuseRawBodies, requireDeviceSignature, signer } from "./auth.js";

export function inboxRoutes(ctx: DeliveryContext) {
  return async (app: ServiceApp) => {
    requireDeviceSignature(app, ctx);
    refuseRawBodies(app);

    app.get(
      "/v1/inbox",
      {
        schema: {
          summary: "Everything for this device after the cursor (or after what it acknowledged), in order",
          description:
            "Items: invitation, welcome, message, removed, forked, behind_retention (docs/protocol.md §4). " +
            "A device of an account of this instance must be listed for it by the instance's directory " +
            "(`403 device_not_registered`, `503 directory_unavailable`); so must it to acknowledge. An " +
            "`after` naming a stream the device never had, or a position beyond the inbox, is " +
            "`400 invalid_cursor`.",
          security: [{ device: [] }],
          querystring: InboxQuery,
          response: { 200: InboxResponse, ...deviceErrors },
        },
      },
      async (req) => {
        const reader = await inboxReader(ctx, signer(req));
        const after = req.query.after === undefined ? undefined : decodeCursor(req.query.after);
        const page = await readInbox(ctx.store, reader, after, {
          limit: req.query.limit ?? ctx.limits.pageItems,
          maxBytes: ctx.limits.pageBytes,
        });
        for (const item of page.items) {
          ctx.metrics.itemsOut.inc({ kind: item.kind, path: "poll" });
          if (item.kind === "behind_retention") ctx.metrics.behindRetention.inc();
        }
        return { items: page.items, cursor: encodeCursor(page.cursor), more: page.more };
      },
    );

    app.post(
      "/v1/inbox/ack",
      {
        schema: {
          summary: "Acknowledge everything up to a cursor; acknowledged positions never move back",
          description:
            "Entries every member device acknowledged are deleted (retention), and so are an account's " +
            "invitations once every device its instance's directory lists has acknowledged them. A cursor " +
            "naming a stream the device never had, or a position beyond the inbox, is `400 invalid_cursor`.",
          security: [{ device: [] }],
          body: AckBody,
          response: { 200: AckResponse, ...deviceErrors },
        },
      },
      async (req) => {
        const reader = await inboxReader(ctx, signer(req));
        await acknowledge(ctx, reader, decodeCursor(req.body.cursor));
        return { acked: true as const };
      },
    );
  };
}
