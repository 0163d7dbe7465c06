// GET /api/v1/accounts/verify_credentials and PATCH /api/v1/accounts/update_credentials
// (Api::V1::Accounts::CredentialsController).
import { authorize, requirePotentialUser, requireUser } from "../http/auth.js";
import { readParams } from "../http/bodies.js";
import { booleanParam } from "../http/params.js";
import { applyCredentialsUpdate } from "../model/accountUpdate.js";
import { renderCredentialAccount } from "../render/account.js";
import type { RouteContext } from "./context.js";

export function registerCredentialRoutes({ app, state }: RouteContext): void {
  app.get("/api/v1/accounts/verify_credentials", async (req) => {
    const token = authorize(state, req, "profile", "read", "read:accounts");
    const params = await readParams(req);
    const account = requirePotentialUser(token, booleanParam(params, "allow_nonfunctional") === true);
    return renderCredentialAccount(state, account);
  });

  app.patch("/api/v1/accounts/update_credentials", async (req) => {
    const token = authorize(state, req, "write", "write:accounts");
    const account = requireUser(token);
    applyCredentialsUpdate(account, await readParams(req));
    return renderCredentialAccount(state, account);
  });
}
