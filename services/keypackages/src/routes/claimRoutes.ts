import { serializerCompiler, type FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { ClaimBody, ClaimResponse, type ClaimResult } from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { namedAccount, type NamedAccount } from "./accountParam.js";
import { deviceOf, requireDevice } from "./authentication.js";
import { errorResponses } from "./errorResponses.js";

/** POST /v1/claims: device-signed by any device, of any instance (its certificate is self-contained). */
export const claimRoutes: FastifyPluginAsyncZod<{ ctx: DirectoryContext }> = async (app, { ctx }) => {
  app.post(
    "/v1/claims",
    {
      schema: {
        summary: "Claim one KeyPackage per registered device of each named account",
        description:
          "Per account: `foreign` (another instance's), `no_devices`, or `ok` with one KeyPackage per " +
          "device and `exhausted` listing the devices with nothing left. Only devices of the account's " +
          "current signed device list hold KeyPackages (a new list removes the others at once); an " +
          "account without a list is `no_devices` when the directory requires lists " +
          "(DEVICE_LIST_REQUIRED). Per device, atomically: the " +
          "same answer again for a repeated `claim_id` within 10 minutes, else the ordinary KeyPackage " +
          "that expires soonest (handed out once), else the last-resort one (`last_resort: true`). " +
          "The requesting device is never handed its own. Rate limits per requesting device and per " +
          "requesting account key (its certificate's domain and account key, never the domain alone) " +
          "answer `429`; once the claims naming an account spent its budget for the window, its devices " +
          "hand out last-resort KeyPackages only.",
        tags: ["claims"],
        security: [{ device: [] }],
        body: ClaimBody,
        response: { 200: ClaimResponse, ...errorResponses(400, 401, 413, 415, 429, 502, 503) },
      },
      preValidation: requireDevice(ctx, ["device", "domain"]),
      // A 200 is built below from canonical accts and what the store holds, every field of which was
      // checked on its way in; zod's encoder re-checked ~2 KB of base64url per KeyPackage on every
      // claim. So it is written as it is; ClaimResponse still documents it (OpenAPI), the tests hold
      // every answer to it, and errors keep the schema's serializer.
      serializerCompiler: (route) =>
        route.httpStatus === "200"
          ? (data) => JSON.stringify(data)
          : // Fastify hands a serializer compiler the schema of one status, not the route's.
            serializerCompiler(route as unknown as Parameters<typeof serializerCompiler>[0]),
    },
    async (req) => {
      const requester = deviceOf(req);
      // Repeats are recognised per requester and intent (claim_id), never per requester alone (D1).
      const memoKey =
        req.body.claim_id === undefined ? undefined : `${requester.deviceIdText}.${req.body.claim_id}`;
      const named = new Map<string, NamedAccount>();
      req.body.accounts.forEach((text, i) => {
        const account = namedAccount(text, `accounts[${i}]`);
        named.set(account.acct, account);
      });
      const localDomain = await ctx.instance.get();
      const now = ctx.now();
      ctx.metrics.claimRequests.inc();

      const claimAccount = async ({ acct, domain }: NamedAccount): Promise<ClaimResult> => {
        const result: ClaimResult = { acct, status: "ok", key_packages: [], exhausted: [] };
        if (domain !== localDomain) return { ...result, status: "foreign" };
        const scope = {
          excludeDeviceId: requester.acct === acct ? requester.deviceIdText : undefined,
          listRequired: ctx.config.deviceListRequired,
        };
        // Nobody drains an account: each claim naming it counts against its `target` budget (the
        // plugin-backed limiter), and once the claims of the window spent it, its devices hand out their
        // last-resort KeyPackages only (README "Rate limits", D4). Only accounts with devices to claim
        // from (other than the requester's) are counted, so that naming made-up accounts creates no
        // counters and cannot push real ones out of the in-memory store.
        let overBudget = false;
        const target = ctx.limiters.target;
        if (target) {
          const targets = await ctx.store.claimTargets(acct, scope);
          if (targets === "no_devices") return { ...result, status: "no_devices" };
          if (targets > 0) overBudget = (await target.hit(req, acct)).exceeded;
        }
        // One step of the store: the registered devices (always a subset of the current list: a new
        // list removes the others in the same step, and registrations are checked against it), unless
        // the account has no list while lists are required (D7); and one KeyPackage per device, last-
        // resort ones only when over budget. The requesting device never needs a KeyPackage of its
        // own: it cannot add itself.
        const claimed = await ctx.store.claimAccount(acct, { ...scope, memoKey, now, overBudget });
        if (claimed.status === "no_devices") return { ...result, status: "no_devices" };
        if (overBudget && claimed.devices.length > 0) ctx.metrics.rateLimited.inc({ limit: "target" });
        for (const { deviceId, claimed: kp } of claimed.devices) {
          if (!kp) {
            result.exhausted.push(deviceId);
            ctx.metrics.exhausted.inc();
            continue;
          }
          if (kp.replayed) ctx.metrics.claimReplays.inc();
          else ctx.metrics.handedOut.inc({ kind: kp.lastResort ? "last_resort" : "ordinary" });
          result.key_packages.push({
            device_id: deviceId,
            key_package: kp.keyPackage,
            last_resort: kp.lastResort,
          });
        }
        return result;
      };

      return { accounts: await Promise.all([...named.values()].map(claimAccount)) };
    },
  );
};
