// GET /.well-known/webfinger (WellKnown::WebfingerController) and /.well-known/host-meta. Errors have
// empty bodies: 400 without a usable resource, 404 for an unknown account or a foreign domain, 410 for
// an account deleted or whose suspension is final. An account suspended by a moderator (still within the
// 30 days in which it can be restored) is found, as on Mastodon; its REST answer says `suspended: true`.
import type { FastifyReply } from "fastify";
import { readParams } from "../http/bodies.js";
import { stringParam } from "../http/params.js";
import type { LocalAccount } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import type { RouteContext } from "./context.js";

type Resolution = { account: LocalAccount } | { status: 400 | 404 };

/** WebfingerResource#username, then Account.find_local!. */
function resolveResource(state: InstanceState, resource: string): Resolution {
  let username: string | undefined;
  if (/^https?/i.test(resource)) {
    let path: string;
    try {
      path = new URL(resource).pathname;
    } catch {
      return { status: 400 };
    }
    username = /^\/(?:users\/|@)([^/]+)\/?$/.exec(path)?.[1];
    if (username === undefined) return { status: 404 };
  } else if (resource.includes("@")) {
    const parts = resource.replace(/^acct:/, "").split("@");
    const domain = parts.at(-1) ?? "";
    if (!state.isLocalDomain(domain) && !state.isWebDomain(domain)) return { status: 404 };
    username = parts[0];
  } else {
    return { status: 400 };
  }
  const account = username === undefined ? undefined : state.accounts.findLocal(username);
  return account === undefined ? { status: 404 } : { account };
}

/** Account#suspended_permanently?: suspended with no pending deletion request (or deleted). */
function permanentlyUnavailable(account: LocalAccount): boolean {
  return account.deleted || (account.suspendedAt !== null && !account.deletionRequested);
}

function empty(reply: FastifyReply, status: number): FastifyReply {
  return reply.code(status).header("cache-control", "max-age=180, public").send();
}

export function registerWebfingerRoutes({ app, state }: RouteContext): void {
  app.get("/.well-known/webfinger", async (req, reply) => {
    const params = await readParams(req);
    const resource = stringParam(params, "resource");
    if (resource === undefined || resource === "") return empty(reply, 400);
    const found = resolveResource(state, resource);
    if ("status" in found) return empty(reply, found.status);
    const { account } = found;
    if (permanentlyUnavailable(account)) return empty(reply, 410);
    const web = state.webOrigin;
    const profile = state.accountUrl(account);
    const self = state.accountUri(account);
    return reply
      .code(200)
      .type("application/jrd+json; charset=utf-8")
      .header("cache-control", "max-age=259200, public")
      .send(
        JSON.stringify({
          subject: `acct:${account.username}@${state.config.domain}`,
          aliases: [profile, self],
          links: [
            { rel: "http://webfinger.net/rel/profile-page", type: "text/html", href: profile },
            { rel: "self", type: "application/activity+json", href: self },
            {
              rel: "http://ostatus.org/schema/1.0/subscribe",
              template: `${web}/authorize_interaction?uri={uri}`,
            },
          ],
        }),
      );
  });

  app.get("/.well-known/host-meta", async (_req, reply) => {
    const template = `${state.webOrigin}/.well-known/webfinger?resource={uri}`;
    return reply
      .type("application/xrd+xml; charset=utf-8")
      .send(
        `<?xml version="1.0" encoding="UTF-8"?>\n<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n` +
          `  <Link rel="lrdd" template="${template}"/>\n</XRD>\n`,
      );
  });
}
