import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { ClaimBody, ClaimResponse, toBase64url, type ClaimResult } from "@mastodon-mls/protocol";
import type { DirectoryContext } from "../context.js";
import { namedAccount, type NamedAccount } from "./accountParam.js";
import { deviceOf, requireDevice } from "./authentication.js";
import { errorResponses } from "./errorResponses.js";
import { enforceLimit } from "../rateLimits.js";

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
          "requesting domain answer `429`; once the claims naming an account spent its budget for the " +
          "window, its devices hand out last-resort KeyPackages only.",
        tags: ["claims"],
        security: [{ device: [] }],
        body: ClaimBody,
        response: { 200: ClaimResponse, ...errorResponses(400, 401, 413, 415, 429, 502, 503) },
      },
      preValidation: [
        requireDevice(ctx),
        enforceLimit(ctx.limiters.device, ctx.metrics, (req) => deviceOf(req).deviceIdText),
        enforceLimit(ctx.limiters.domain, ctx.metrics, (req) => domainOf(deviceOf(req).acct)),
      ],
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
        // Registrations are always a subset of the current list (a new list removes the others in the
        // same step, and registrations are checked against it), so the registered devices are the ones
        // to claim. Without a list, the account is claimable only while lists are not required (D7).
        const [devices, unlisted] = await Promise.all([
          ctx.store.listDevices(acct),
          ctx.config.deviceListRequired ? ctx.store.getDeviceList(acct).then((l) => l === undefined) : false,
        ]);
        if (devices.length === 0 || unlisted) return { ...result, status: "no_devices" };
        // The requesting device never needs a KeyPackage of its own: it cannot add itself.
        const targets = devices.filter(
          (d) => d.deviceId !== requester.deviceIdText || d.acct !== requester.acct,
        );
        if (targets.length === 0) return result;
        // Nobody drains an account: once the claims naming it spent its budget for the window, its
        // devices hand out their last-resort KeyPackages only (README "Rate limits").
        const budget = await ctx.limiters.target?.hit(req, acct);
        const lastResortOnly = budget?.exceeded ?? false;
        if (lastResortOnly) ctx.metrics.rateLimited.inc({ limit: "target" });
        const claimed = await Promise.all(
          targets.map((d) => ctx.store.claim(acct, d.deviceId, memoKey, now, { lastResortOnly })),
        );
        targets.forEach((device, i) => {
          const kp = claimed[i];
          if (!kp) {
            result.exhausted.push(device.deviceId);
            ctx.metrics.exhausted.inc();
            return;
          }
          if (kp.replayed) ctx.metrics.claimReplays.inc();
          else ctx.metrics.handedOut.inc({ kind: kp.lastResort ? "last_resort" : "ordinary" });
          result.key_packages.push({
            device_id: device.deviceId,
            key_package: toBase64url(kp.keyPackage),
            last_resort: kp.lastResort,
          });
        });
        return result;
      };

      return { accounts: await Promise.all([...named.values()].map(claimAccount)) };
    },
  );
};

/** The domain of a canonical `user@domain`. */
function domainOf(acct: string): string {
  return acct.slice(acct.lastIndexOf("@") + 1);
}
