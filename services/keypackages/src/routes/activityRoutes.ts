import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import {
  ACTIVITYSTREAMS_CONTEXT,
  ACTIVITY_JSON,
  AcctText,
  KeyPackageCollection,
  MLS_ACTIVITYPUB_CONTEXT,
  ProtocolError,
} from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { namedAccount } from "./accountParam.js";
import { errorResponses } from "./errorResponses.js";

/** Media types an ActivityStreams client may ask for; the answer is always `application/activity+json`. */
const SERVABLE = new Set([ACTIVITY_JSON, "application/ld+json", "application/json", "application/*", "*/*"]);

/**
 * GET /v1/accounts/:acct/keypackages (public, read-only): the account's `keyPackages` collection as the
 * SWICG "MLS over ActivityPub" draft shapes it, so that clients following the draft find our users. One
 * item per registered device, linking to the claim endpoint; no KeyPackage bytes (D3): reading this
 * neither hands out nor consumes anything, so it cannot bypass claims or their rate limits.
 */
export const activityRoutes: FastifyPluginAsyncZod<{ ctx: DirectoryContext }> = async (app, { ctx }) => {
  app.get(
    "/v1/accounts/:acct/keypackages",
    {
      schema: {
        summary: "The account's keyPackages collection (ActivityStreams, SWICG MLS over ActivityPub draft)",
        description:
          "Read-only. One `KeyPackage` item per registered device, without `content`: KeyPackages are " +
          "handed out only by `POST /v1/claims`, which each item links to (docs/decisions.md, D3).",
        tags: ["activitystreams"],
        params: z.object({ acct: AcctText }),
        response: {
          200: { content: { [ACTIVITY_JSON]: { schema: KeyPackageCollection } } },
          ...errorResponses(400, 404, 406, 502, 503),
        },
      },
    },
    async (req, reply) => {
      if (!acceptsActivityJson(req.headers.accept)) {
        throw new ProtocolError(
          "not_acceptable",
          `This resource is ${ACTIVITY_JSON}; ask for it (or application/ld+json, application/json).`,
        );
      }
      const { acct, domain } = namedAccount(req.params.acct, "The path's account");
      if (domain !== (await ctx.instance.get())) throw new ProtocolError("foreign_account");
      const devices = await ctx.store.listDevices(acct);
      const id = `${ctx.config.publicUrl}/v1/accounts/${acct}/keypackages`;
      const claims = `${ctx.config.publicUrl}/v1/claims`;
      const collection: KeyPackageCollection = {
        "@context": [ACTIVITYSTREAMS_CONTEXT, MLS_ACTIVITYPUB_CONTEXT],
        id,
        type: "Collection",
        attributedTo: `acct:${acct}`,
        summary:
          `MLS devices of ${acct}. Each device's KeyPackages are single-use: they are handed out one ` +
          `at a time by POST ${claims}, signed by the requesting device, never published here.`,
        totalItems: devices.length,
        items: devices.map((d) => ({
          id: `${id}#${d.deviceId}`,
          type: "KeyPackage" as const,
          attributedTo: `acct:${acct}`,
          mediaType: "message/mls" as const,
          name: d.deviceId,
          url: { type: "Link" as const, href: claims, mediaType: "application/json" as const },
        })),
      };
      return reply
        .type(`${ACTIVITY_JSON}; charset=utf-8`)
        .header("access-control-allow-origin", "*")
        .header("vary", "accept")
        .send(collection);
    },
  );
};

/** Whether `Accept` (absent: anything) admits a JSON form of ActivityStreams, with a non-zero q. */
export function acceptsActivityJson(accept: string | undefined): boolean {
  if (accept === undefined || accept.trim() === "") return true;
  return accept.split(",").some((range) => {
    const [type = "", ...params] = range.split(";").map((p) => p.trim().toLowerCase());
    const q = params.find((p) => p.startsWith("q="));
    return SERVABLE.has(type) && (q === undefined || Number(q.slice(2)) > 0);
  });
}
