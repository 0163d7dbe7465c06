// POST /api/v1/statuses, GET /api/v1/statuses/:id and GET /api/v1/conversations. A direct status
// reaches exactly the accounts @-mentioned in its text that the instance knows and that are not
// suspended; nothing is federated. A repeated Idempotency-Key within an hour returns the first status.
import { authorize, authorizeIfGotToken, requireUser } from "../http/auth.js";
import { readParams } from "../http/bodies.js";
import { apiError, recordNotFound } from "../http/errors.js";
import { booleanParam, stringParam } from "../http/params.js";
import { extractEntities } from "../format/extractor.js";
import { countableLength } from "../model/textLength.js";
import { renderAccount } from "../render/account.js";
import { renderStatus } from "../render/status.js";
import { isSuspended, type Account, type Privacy } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import type { Status } from "../state/statuses.js";
import type { RouteContext } from "./context.js";

export const MAX_STATUS_CHARS = 500;
const MENTIONS_ONLY = new Set(["mention"] as const);

function isPrivacy(value: string): value is Privacy {
  return value === "public" || value === "unlisted" || value === "private" || value === "direct";
}

/** ProcessMentionsService without federation: known, available accounts only, each once. */
function mentionedAccounts(state: InstanceState, text: string): Account[] {
  const out: Account[] = [];
  for (const entity of extractEntities(text, MENTIONS_ONLY)) {
    if (entity.kind !== "mention") continue;
    const domain = state.isLocalDomain(entity.domain) ? null : entity.domain;
    const account = state.accounts.find(entity.username, domain);
    if (account === undefined || isSuspended(account) || out.includes(account)) continue;
    if (account.kind === "local" && account.deleted) continue;
    out.push(account);
  }
  return out;
}

export function registerStatusRoutes({ app, state }: RouteContext): void {
  app.post("/api/v1/statuses", async (req) => {
    const token = authorize(state, req, "write", "write:statuses");
    const account = requireUser(token);
    const idempotencyKey = req.headers["idempotency-key"];
    const key = typeof idempotencyKey === "string" && idempotencyKey !== "" ? idempotencyKey : undefined;
    if (key !== undefined) {
      const earlier = state.statuses.recall(account, key);
      if (earlier !== undefined) return renderStatus(state, earlier, account);
    }

    const params = await readParams(req);
    const text = stringParam(params, "status") ?? "";
    const spoilerText = stringParam(params, "spoiler_text") ?? "";
    const visibility = stringParam(params, "visibility") ?? account.settings.privacy;
    if (!isPrivacy(visibility))
      throw apiError(422, "Validation failed: Visibility is not included in the list");
    if (/^[\p{White_Space}]*$/u.test(text)) throw apiError(422, "Validation failed: Text can't be blank");
    if (countableLength(spoilerText) + countableLength(text) > MAX_STATUS_CHARS) {
      throw apiError(422, `Validation failed: Text character limit of ${MAX_STATUS_CHARS} exceeded`);
    }
    let inReplyTo: Status | null = null;
    const inReplyToId = stringParam(params, "in_reply_to_id");
    if (inReplyToId !== undefined && inReplyToId !== "") {
      const parent = state.statuses.find(inReplyToId);
      if (parent === undefined || !state.statuses.visibleTo(parent, account)) {
        throw apiError(404, "The post you are trying to reply to does not appear to exist.");
      }
      inReplyTo = parent;
    }

    const status: Status = {
      id: state.ids.next(),
      account,
      text,
      spoilerText,
      visibility,
      sensitive: booleanParam(params, "sensitive") ?? (account.settings.sensitive || spoilerText !== ""),
      language: stringParam(params, "language") ?? account.settings.language ?? "en",
      inReplyTo,
      mentions: mentionedAccounts(state, text),
      application: token.application,
      createdAt: new Date(),
    };
    state.statuses.add(status);
    account.statusesCount += 1;
    account.lastStatusAt = status.createdAt;
    if (key !== undefined) state.statuses.rememberIdempotency(account, key, status.id);
    return renderStatus(state, status, account);
  });

  app.get<{ Params: { id: string } }>("/api/v1/statuses/:id", async (req) => {
    const viewer = authorizeIfGotToken(state, req, "read", "read:statuses")?.account ?? undefined;
    const status = state.statuses.find(req.params.id);
    // Not being allowed to see a status is indistinguishable from its not existing.
    if (status === undefined || !state.statuses.visibleTo(status, viewer)) throw recordNotFound();
    return renderStatus(state, status, viewer);
  });

  app.get("/api/v1/conversations", async (req) => {
    const account = requireUser(authorize(state, req, "read", "read:statuses"));
    const params = await readParams(req);
    const limit = Math.min(Math.abs(Number.parseInt(stringParam(params, "limit") ?? "20", 10)) || 20, 40);
    return state.statuses
      .conversationsOf(account)
      .slice(0, limit)
      .map((c) => ({
        id: c.id,
        unread: c.unread,
        accounts: c.accounts.map((a) => renderAccount(state, a)),
        last_status: renderStatus(state, c.lastStatus, account),
      }));
  });
}
