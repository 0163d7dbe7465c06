// GET /api/v1/accounts/lookup and GET /api/v1/accounts/:id. Lookup is ResolveAccountService with
// skip_webfinger: it answers from what the instance already knows and never asks another server, so
// an unknown remote handle is 404 even if it exists elsewhere, while a remote account the instance has
// federated with is found (with `acct` carrying its domain).
import { authorizeIfGotToken } from "../http/auth.js";
import { readParams } from "../http/bodies.js";
import { recordNotFound } from "../http/errors.js";
import { stringParam } from "../http/params.js";
import { renderAccount } from "../render/account.js";
import type { Account } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import type { RouteContext } from "./context.js";

/** `acct` as ResolveAccountService reads it: `[@]user[@domain]`, the local domain meaning this instance. */
export function resolveKnownAcct(state: InstanceState, acct: string | undefined): Account | undefined {
  if (acct === undefined || /^[\p{White_Space}]*$/u.test(acct)) return undefined;
  const [username, domain] = acct.trim().replace(/^@/, "").split("@");
  if (username === undefined || username === "") return undefined;
  const remoteDomain = domain === undefined || domain === "" || state.isLocalDomain(domain) ? null : domain;
  return state.accounts.find(username, remoteDomain);
}

export function registerAccountRoutes({ app, state }: RouteContext): void {
  app.get("/api/v1/accounts/lookup", async (req) => {
    authorizeIfGotToken(state, req, "read", "read:accounts");
    const params = await readParams(req);
    const account = resolveKnownAcct(state, stringParam(params, "acct"));
    if (account === undefined) throw recordNotFound();
    return renderAccount(state, account);
  });

  app.get<{ Params: { id: string } }>("/api/v1/accounts/:id", async (req) => {
    authorizeIfGotToken(state, req, "read", "read:accounts");
    const account = state.accounts.findById(req.params.id);
    if (account === undefined) throw recordNotFound();
    return renderAccount(state, account);
  });
}
