import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { parseDeviceCertificate } from "@mastodon-mls/bridge";
import {
  AccountDevices,
  AcctText,
  DeviceId,
  LIMITS,
  ProtocolError,
  RegisterDeviceBody,
  RegisterDeviceResponse,
  fromBase64url,
  toBase64url,
} from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { LIST_CHANGED, checkListed, withCurrentList } from "../deviceLists.js";
import { namedAccount } from "./accountParam.js";
import { accountOf, requireAccount } from "./authentication.js";
import { errorResponses } from "./errorResponses.js";

/** PUT /v1/devices/:deviceId (bearer token) and GET /v1/accounts/:acct/devices (public). */
export const deviceRoutes: FastifyPluginAsyncZod<{ ctx: DirectoryContext }> = async (app, { ctx }) => {
  app.put(
    "/v1/devices/:deviceId",
    {
      schema: {
        summary: "Register a device: its certificate, signed by the account key",
        description:
          "The certificate's device id must be the path's (`device_mismatch`) and its acct the token's " +
          "(`acct_mismatch`). When the account has a signed device list, the device must be in it " +
          "(`device_not_listed`) and the certificate by the list's account key or one its continuity " +
          "statements link to it (`invalid_certificate`); without a list, `device_not_listed` only " +
          "when the directory requires lists (DEVICE_LIST_REQUIRED). `201` when new; `200` when the " +
          "same certificate was there already or a renewed certificate for the same key replaced it. " +
          "At most 16 devices per account (`too_many_items`). Registrations, uploads and device-list " +
          "updates of one account share a rate limit (`429`).",
        tags: ["devices"],
        security: [{ bearer: [] }],
        params: z.object({ deviceId: DeviceId }),
        body: RegisterDeviceBody,
        response: {
          200: RegisterDeviceResponse,
          201: RegisterDeviceResponse,
          ...errorResponses(400, 401, 403, 409, 413, 415, 429, 502, 503),
        },
      },
      preValidation: requireAccount(ctx),
    },
    async (req, reply) => {
      const account = accountOf(req);
      const certificate = fromBase64url(req.body.certificate, LIMITS.certificateBytes);
      const cert = await parseDeviceCertificate(certificate, ctx.now());
      if (cert.deviceIdText !== req.params.deviceId) {
        throw new ProtocolError(
          "device_mismatch",
          "The certificate is for another device id than the path's.",
        );
      }
      if (cert.acct !== account.acct) {
        throw new ProtocolError("acct_mismatch", "The certificate names another account than the token's.");
      }
      const result = await withCurrentList(ctx.store, cert.acct, ctx.now, async (current, now) => {
        await checkListed(current, cert, ctx.config.deviceListRequired, now); // DIR-5
        const put = await ctx.store.putDevice(
          {
            acct: cert.acct,
            deviceId: cert.deviceIdText,
            certificate,
            sigKey: cert.sigKey,
            registeredAt: now,
          },
          { listVersion: current.version },
        );
        return put === "list_changed" ? LIST_CHANGED : put;
      });
      if (result === "device_limit") {
        throw new ProtocolError(
          "too_many_items",
          `An account registers at most ${ctx.limits.devicesPerAccount} devices.`,
        );
      }
      if (result === "key_mismatch") {
        throw new ProtocolError("device_mismatch", "This device id is registered with another key.");
      }
      ctx.metrics.devicesRegistered.inc({ result });
      return reply
        .status(result === "created" ? 201 : 200)
        .send({ acct: cert.acct, device_id: cert.deviceIdText });
    },
  );

  app.get(
    "/v1/accounts/:acct/devices",
    {
      schema: {
        summary: "The devices of an account of this instance, with their certificates",
        description:
          "Oldest registration first. `device_list`: the account's current signed device list, null " +
          "while it has published none; `key_rotations`: its account-key continuity statements, " +
          "oldest first (at most 16). `foreign_account` for a handle of another instance.",
        tags: ["devices"],
        params: z.object({ acct: AcctText }),
        response: { 200: AccountDevices, ...errorResponses(400, 404, 502, 503) },
      },
    },
    async (req) => {
      const { acct, domain } = namedAccount(req.params.acct, "The path's account");
      if (domain !== (await ctx.instance.get())) throw new ProtocolError("foreign_account");
      const [devices, list] = await Promise.all([ctx.store.listDevices(acct), ctx.store.getDeviceList(acct)]);
      return {
        acct,
        device_list: list ? toBase64url(list.list) : null,
        devices: devices.map((d) => ({ device_id: d.deviceId, certificate: toBase64url(d.certificate) })),
        key_rotations: (list?.rotations ?? []).map((r) => toBase64url(r)),
      };
    },
  );
};
