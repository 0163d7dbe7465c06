import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { bytesEqual, verifyDeviceListUpdate } from "@mastodon-mls/bridge";
import {
  AcctText,
  DEVICE_LIST_MAX_BYTES,
  KEY_ROTATION_MAX_BYTES,
  ProtocolError,
  PutDeviceListBody,
  PutDeviceListResponse,
  fromBase64url,
} from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { LIST_CHANGED, survives, withCurrentList } from "../deviceLists.js";
import { namedAccount } from "./accountParam.js";
import { accountOf, requireAccount } from "./authentication.js";
import { errorResponses } from "./errorResponses.js";

/** A list (8 KiB) and a continuity statement (1 KiB) in base64url, in JSON, with room to spare. */
export const DEVICE_LIST_BODY_LIMIT = 16 * 1024;

/** PUT /v1/accounts/:acct/device-list (bearer token of that account). */
export const deviceListRoutes: FastifyPluginAsyncZod<{ ctx: DirectoryContext }> = async (app, { ctx }) => {
  app.put(
    "/v1/accounts/:acct/device-list",
    {
      bodyLimit: DEVICE_LIST_BODY_LIMIT,
      schema: {
        summary: "Publish the account's signed device list (and a continuity statement for a new key)",
        description:
          "Only the account's own token (`acct_mismatch`). Checked as docs/identity.md DIR-1…DIR-4 say: " +
          "the list verifies under the account key it names (`invalid_device_list`), is for this account " +
          "(`acct_mismatch`) and has a higher version than the stored one (`409 stale_device_list`); " +
          "`key_rotation`, when the account key changed, links exactly the stored key to the new one " +
          "(`invalid_key_rotation`) and is then kept and served. A key change without one is accepted " +
          "(the old key may be lost; peers who pinned it see key-changed). Stored atomically, and in the " +
          "same step every registration the new list does not cover — a device not in it, or one " +
          "certified by a key it no longer links to — is removed with all its KeyPackages (`removed`). " +
          "The exact list already stored is answered again (a retried request). Registrations, uploads " +
          "and device-list updates of one account share a rate limit (`429`).",
        tags: ["devices"],
        security: [{ bearer: [] }],
        params: z.object({ acct: AcctText }),
        body: PutDeviceListBody,
        response: {
          200: PutDeviceListResponse,
          ...errorResponses(400, 401, 403, 409, 413, 415, 429, 502, 503),
        },
      },
      preValidation: requireAccount(ctx),
    },
    async (req) => {
      const account = accountOf(req);
      const { acct } = namedAccount(req.params.acct, "The path's account");
      if (acct !== account.acct) {
        throw new ProtocolError("acct_mismatch", "Only the account's own token may publish its device list.");
      }
      const next = fromBase64url(req.body.device_list, DEVICE_LIST_MAX_BYTES);
      const keyRotation =
        req.body.key_rotation === undefined
          ? undefined
          : fromBase64url(req.body.key_rotation, KEY_ROTATION_MAX_BYTES);

      return withCurrentList(ctx.store, acct, ctx.now, async (current, now) => {
        if (
          current.bytes &&
          bytesEqual(current.bytes, next) &&
          (keyRotation === undefined || current.rotations.some((r) => bytesEqual(r, keyRotation)))
        ) {
          return { acct, version: current.version, removed: [] }; // a retry of what is stored
        }
        const update = await verifyDeviceListUpdate({
          acct,
          stored: current.list,
          next,
          ...(keyRotation === undefined ? {} : { keyRotation }),
          now,
        });
        const rotations = update.rotation
          ? [...current.rotations, update.rotation.encoded].slice(-ctx.limits.rotationsPerAccount)
          : current.rotations;
        // DIR-5 under the new list decides which registrations stay; the store removes the others in
        // the same step as the replacement, provided the registrations are still these.
        const registered = await ctx.store.listDevices(acct);
        const removed: string[] = [];
        for (const device of registered) {
          if (!(await survives(device, update.list, rotations, now))) removed.push(device.deviceId);
        }
        const result = await ctx.store.putDeviceList(acct, {
          expectedVersion: current.version,
          list: next,
          version: update.list.version,
          rotation: update.rotation?.encoded,
          seen: registered.map((d) => ({ deviceId: d.deviceId, certificate: d.certificate })),
          remove: removed,
        });
        if (result === "changed") return LIST_CHANGED;
        ctx.metrics.deviceListsStored.inc();
        ctx.metrics.devicesRemoved.inc(removed.length);
        return { acct, version: update.list.version, removed };
      });
    },
  );
};
