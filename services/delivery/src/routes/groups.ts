import {
  CreateGroupBody,
  CreateGroupResponse,
  ErrorBodySchema,
  ProtocolError,
  SubmitMessageBody,
  SubmitMessageResponse,
  fromBase64url,
  toBase64url,
  LIMITS,
} from "@mastodon-mls/protocol";
import type { ServiceApp } from "@mastodon-mls/service-kit";
import { z } from "zod";
import type { DeliveryContext } from "../context.js";
import { parseGroupId, submitMessage } from "../submit.js";
import { deviceErrors, requireDeviceSignature, signer } from "./auth.js";

const GroupParams = z.object({ groupId: z.string().max(100) });

export function groupRoutes(ctx: DeliveryContext) {
  return async (app: ServiceApp) => {
    requireDeviceSignature(app, ctx);
    app.post(
      "/v1/groups",
      {
        preValidation: async (req) => {
          if (Buffer.isBuffer(req.body)) throw new ProtocolError("unsupported_media_type");
        },
        schema: {
          summary: "Create a group on this hub; the signing device is its leaf 0, at epoch 0",
          security: [{ device: [] }],
          body: CreateGroupBody,
          response: { 201: CreateGroupResponse, 409: ErrorBodySchema, ...deviceErrors },
        },
      },
      async (req, reply) => {
        const device = signer(req);
        const groupId = req.body.group_id;
        parseGroupId(groupId);
        await ctx.store.indexDeviceGroups(device.deviceIdText, [groupId]);
        const created = await ctx.store.createGroup({
          groupId,
          creator: { device: device.deviceIdText, acct: device.acct },
          at: ctx.now(),
        });
        if (!created) throw new ProtocolError("group_exists");
        ctx.log.info({ group: groupId }, "group created");
        return reply.status(201).send({ group_id: groupId, epoch: 0 });
      },
    );

    app.post(
      "/v1/groups/:groupId/messages",
      {
        // `message/mls` carries one MLSMessage alone (no Welcome). It is given the JSON shape after the
        // signature over the raw bytes was checked, so one schema validates both forms.
        preValidation: async (req) => {
          if (!Buffer.isBuffer(req.body)) return;
          if (req.body.byteLength > LIMITS.mlsMessageBytes) throw new ProtocolError("payload_too_large");
          req.body = { message: toBase64url(req.body) };
        },
        schema: {
          summary: "Submit one MLSMessage: a commit (with its Welcome), a proposal or an application message",
          description: "JSON with base64url fields, or the raw MLSMessage as `message/mls` (no Welcome).",
          security: [{ device: [] }],
          params: GroupParams,
          body: SubmitMessageBody,
          response: {
            201: SubmitMessageResponse,
            409: ErrorBodySchema,
            422: ErrorBodySchema,
            ...deviceErrors,
          },
        },
      },
      async (req, reply) => {
        const accepted = await submitMessage(ctx, req.params.groupId, signer(req), {
          message: fromBase64url(req.body.message, LIMITS.mlsMessageBytes),
          welcome:
            req.body.welcome === undefined
              ? undefined
              : fromBase64url(req.body.welcome, LIMITS.mlsMessageBytes),
        });
        return reply.status(201).send(accepted);
      },
    );
  };
}
