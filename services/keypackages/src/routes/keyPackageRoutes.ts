import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import {
  DeviceId,
  KeyPackageCount,
  ProtocolError,
  UploadKeyPackagesBody,
  UploadKeyPackagesResponse,
} from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { LIST_CHANGED, checkListed, checkRegisteredListed, withCurrentList } from "../deviceLists.js";
import { verifyUpload } from "../keyPackageUpload.js";
import { accountOf, deviceOf, requireAccount, requireDevice } from "./authentication.js";
import { errorResponses } from "./errorResponses.js";

const DeviceParams = z.object({ deviceId: DeviceId });

/** POST /v1/devices/:deviceId/keypackages (bearer token) and GET …/keypackages/count (device-signed). */
export const keyPackageRoutes: FastifyPluginAsyncZod<{ ctx: DirectoryContext }> = async (app, { ctx }) => {
  app.post(
    "/v1/devices/:deviceId/keypackages",
    {
      schema: {
        summary: "Upload KeyPackages of a registered device, optionally a new last-resort one",
        description:
          "Up to 100 KeyPackages, each verified (docs/protocol.md KP-1…8, then the token's account and " +
          "the registered device's key; with a signed device list, each KeyPackage's certificate must " +
          "be for a listed device (`device_not_listed`) by the list's key or one linked to it " +
          "(`invalid_certificate`); without one, `device_not_listed` when the directory requires " +
          "lists). All or nothing: the first bad entry refuses the upload and the " +
          "error names it (`field`, `index`). Idempotent by KeyPackageRef; one already handed out is " +
          "never taken back. At most 500 held per device (`too_many_items`). Registrations and uploads " +
          "of one account share a rate limit (`429`).",
        tags: ["keypackages"],
        security: [{ bearer: [] }],
        params: DeviceParams,
        body: UploadKeyPackagesBody,
        response: {
          200: UploadKeyPackagesResponse,
          ...errorResponses(400, 401, 403, 404, 409, 413, 415, 429, 502, 503),
        },
      },
      preValidation: requireAccount(ctx),
    },
    async (req) => {
      const account = accountOf(req);
      const device = await ctx.store.getDevice(account.acct, req.params.deviceId);
      if (!device) {
        throw new ProtocolError("unknown_device", "This device is not registered to the token's account.");
      }
      const result = await withCurrentList(ctx.store, account.acct, ctx.now, async (current, now) => {
        checkRegisteredListed(current, device, ctx.config.deviceListRequired);
        const upload = await verifyUpload(
          req.body,
          {
            acct: account.acct,
            sigKey: device.sigKey,
            checkCertificate: (cert) => checkListed(current, cert, ctx.config.deviceListRequired, now),
          },
          now,
        );
        const added = await ctx.store.addKeyPackages(account.acct, device.deviceId, upload, now, {
          listVersion: current.version,
        });
        return !added.ok && added.reason === "list_changed" ? LIST_CHANGED : added;
      });
      if (!result.ok) {
        throw result.reason === "unknown_device"
          ? new ProtocolError("unknown_device")
          : new ProtocolError(
              "too_many_items",
              `A device holds at most ${ctx.limits.keyPackagesPerDevice} KeyPackages; nothing was stored.`,
            );
      }
      ctx.metrics.keyPackagesStored.inc(result.stored);
      return { stored: result.stored, count: result.count, last_resort: result.lastResort };
    },
  );

  app.get(
    "/v1/devices/:deviceId/keypackages/count",
    {
      schema: {
        summary: "How many KeyPackages this device has left (only the device itself may ask)",
        description:
          "Unexpired ordinary KeyPackages, and whether an unexpired last-resort one is held. Counts " +
          "against the requesting device's rate limit, with its claims (`429`).",
        tags: ["keypackages"],
        security: [{ device: [] }],
        params: DeviceParams,
        response: { 200: KeyPackageCount, ...errorResponses(400, 401, 403, 404, 429, 503) },
      },
      preValidation: requireDevice(ctx, ["device"]),
    },
    async (req) => {
      const requester = deviceOf(req);
      if (requester.deviceIdText !== req.params.deviceId) {
        throw new ProtocolError("forbidden", "Only the device itself may read its KeyPackage count.");
      }
      if (!(await ctx.store.getDevice(requester.acct, requester.deviceIdText))) {
        throw new ProtocolError("unknown_device");
      }
      const stock = await ctx.store.countKeyPackages(requester.acct, requester.deviceIdText, ctx.now());
      return { count: stock.count, last_resort: stock.lastResort };
    },
  );
};
