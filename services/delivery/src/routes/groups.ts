import { randomUUID } from "node:crypto";
import {
  CommitRejectedBody,
  CommitRejectedResponse,
  CreateGroupBody,
  CreateGroupResponse,
  DepartureBody,
  DepartureResponse,
  ErrorBodySchema,
  GroupStatusResponse,
  ProtocolError,
  SubmitMessageBody,
  SubmitMessageResponse,
  fromBase64url,
  toBase64url,
  LIMITS,
} from "@mastodon-mls/protocol";
import { errorSummary, type ServiceApp } from "@mastodon-mls/service-kit";
import { z } from "zod";
import type { DeliveryContext } from "../context.js";
import { depart } from "../departure.js";
import { forkWire, reportCommitRejected } from "../forks.js";
import { leafOf } from "../roster.js";
import { parseGroupId, submitMessage } from "../submit.js";
import { deviceErrors, requireDeviceSignature, signer } from "./auth.js";

const GroupParams = z.object({ groupId: z.string().max(100) });

export function groupRoutes(ctx: DeliveryContext) {
  return async (app: ServiceApp) => {
    requireDeviceSignature(app, ctx);
    const refuseRaw = async (req: { body: unknown }) => {
      if (Buffer.isBuffer(req.body)) throw new ProtocolError("unsupported_media_type");
    };

    app.post(
      "/v1/groups",
      {
        preValidation: refuseRaw,
        schema: {
          summary: "Create a group on this hub; the signing device is its leaf 0, at epoch 0",
          security: [{ device: [] }],
          body: CreateGroupBody,
          response: {
            201: CreateGroupResponse,
            409: ErrorBodySchema.describe("group_exists"),
            422: ErrorBodySchema.describe("too_many_groups"),
            ...deviceErrors,
          },
        },
      },
      async (req, reply) => {
        const device = signer(req);
        const groupId = req.body.group_id;
        parseGroupId(groupId);
        await ctx.rateLimits.take("submissions", device.deviceIdText);
        // The index entry goes first, marked in flight as for an added device (a crash between the two
        // writes loses nothing, and no settle of the entry drops it meanwhile), and the budget is checked
        // in the same store step, so two concurrent creates cannot both take the last place.
        const creator = device.deviceIdText;
        const token = randomUUID();
        const reserved = await ctx.store.beginAdd(creator, groupId, token, ctx.limits.groupsPerDevice);
        if (reserved === "full") {
          throw new ProtocolError(
            "too_many_groups",
            `This device is in ${ctx.limits.groupsPerDevice} groups at this hub already.`,
          );
        }
        // Naming someone else's group, or a store failure (503), must not use up this device's budget:
        // the entry goes unless the device is in the group after all (a create whose answer was lost, or
        // a commit that added it) or another add of it is in flight.
        const giveBack = async () => {
          await ctx.store.endAdd(creator, groupId, token);
          await ctx.store.forgetDeviceGroup(creator, groupId);
        };
        let created: boolean;
        try {
          created = await ctx.store.createGroup({
            groupId,
            creator: { device: creator, acct: device.acct },
            at: ctx.now(),
          });
        } catch (e) {
          await giveBack().catch(() => undefined);
          throw e;
        }
        if (!created) {
          await giveBack();
          throw new ProtocolError("group_exists");
        }
        // The group is made: a failure here only leaves the mark until it lapses (PENDING_ADD_MS).
        await ctx.store.endAdd(creator, groupId, token).catch((e: unknown) => {
          ctx.log.warn({ group: groupId, err: errorSummary(e) }, "ending the create in flight failed");
        });
        ctx.log.info({ group: groupId }, "group created");
        return reply.status(201).send({ group_id: groupId, epoch: 0 });
      },
    );

    app.get(
      "/v1/groups/:groupId",
      {
        schema: {
          summary: "The hub's view of a group (epoch, seq, retention, forks), for its current members",
          security: [{ device: [] }],
          params: GroupParams,
          response: { 200: GroupStatusResponse, ...deviceErrors },
        },
      },
      async (req) => {
        const device = signer(req);
        const groupId = req.params.groupId;
        parseGroupId(groupId);
        const snap = await ctx.store.loadGroup(groupId);
        if (!snap) throw new ProtocolError("unknown_group");
        if (leafOf(snap, device.deviceIdText) === undefined) throw new ProtocolError("not_a_member");
        const status = await ctx.store.groupStatus(groupId);
        if (!status) throw new ProtocolError("unknown_group");
        return {
          group_id: groupId,
          epoch: status.epoch,
          seq: status.seq,
          retained_after: status.base,
          members: status.members,
          forks: status.forks.map(forkWire),
        };
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
          description:
            "JSON with base64url fields, or the raw MLSMessage as `message/mls` (no Welcome). The same as a " +
            "`submit` frame on /v1/stream. 409 `wrong_epoch` carries `epoch` and `commit_hash`; 429 carries " +
            "`retry_after` and a Retry-After header.",
          security: [{ device: [] }],
          params: GroupParams,
          body: SubmitMessageBody,
          response: {
            201: SubmitMessageResponse,
            409: ErrorBodySchema.describe("wrong_epoch {epoch, commit_hash}, stale_epoch {epoch}"),
            422: ErrorBodySchema.describe("screening_failed (SCR-n / WEL-n), too_many_groups"),
            ...deviceErrors,
          },
        },
      },
      async (req, reply) => {
        const accepted = await submitMessage(ctx, req.params.groupId, signer(req), {
          message: fromBase64url(req.body.message, LIMITS.mlsMessageBytes),
          text: req.body.message,
          welcome:
            req.body.welcome === undefined
              ? undefined
              : fromBase64url(req.body.welcome, LIMITS.mlsMessageBytes),
        });
        return reply.status(201).send(accepted);
      },
    );

    app.post(
      "/v1/groups/:groupId/commit-rejected",
      {
        preValidation: refuseRaw,
        schema: {
          summary: "Report an accepted commit this member cannot process: the group is marked forked",
          description:
            "The hub records the fork once per epoch (201; a repeat gets 200 and the first record), appends " +
            "a `forked` item to the group's log for every member, and keeps ordering the group " +
            "(docs/decisions.md, D5).",
          security: [{ device: [] }],
          params: GroupParams,
          body: CommitRejectedBody,
          response: {
            200: CommitRejectedResponse,
            201: CommitRejectedResponse,
            ...deviceErrors,
          },
        },
      },
      async (req, reply) => {
        const { fork, created } = await reportCommitRejected(ctx, req.params.groupId, signer(req), req.body);
        return reply.status(created ? 201 : 200).send({ forked: true as const, fork });
      },
    );

    app.post(
      "/v1/groups/:groupId/departure",
      {
        preValidation: refuseRaw,
        schema: {
          summary:
            "Leave a group at this hub: nothing more is delivered to this device, and it no longer counts",
          description:
            "The signing device stops being a member at the hub at once: it can submit nothing more, its " +
            "streams stop carrying the group, and the group no longer counts against its groups here. Its " +
            "leaf stays in the tree (and the hub's roster) until a member commits its Remove. A repeat, or a " +
            "device that was not in the group, gets the same answer with `leaf` null (docs/decisions.md, D17).",
          security: [{ device: [] }],
          params: GroupParams,
          body: DepartureBody,
          response: { 200: DepartureResponse, ...deviceErrors },
        },
      },
      async (req) => depart(ctx, req.params.groupId, signer(req)),
    );
  };
}
