// UpdateAccountService + `account.update!` for PATCH update_credentials: every permitted attribute is
// assigned, the account's validations run on the result, and either all of it is saved or none of it
// (422 with ValidationErrorFormatter's body). Unknown parameters are ignored, as strong parameters do.
import { codePointLength, rubyStrip } from "../format/escape.js";
import { HttpError, htmlError, SERVER_ERROR_PAGE } from "../http/errors.js";
import { booleanParam, mapParam, stringParam, type ParamMap } from "../http/params.js";
import type { LocalAccount, Privacy } from "../state/accounts.js";
import { assignFields, permitFieldsAttributes, readFields, sameRows, validateFields } from "./fields.js";
import { countableLength } from "./textLength.js";
import { tooLong, ValidationErrors } from "./validation.js";

export const DISPLAY_NAME_LENGTH_LIMIT = 30;
export const NOTE_LENGTH_LIMIT = 500;
// A default of "direct" is not a setting Mastodon accepts.
function isDefaultPrivacy(value: string): value is Exclude<Privacy, "direct"> {
  return value === "public" || value === "unlisted" || value === "private";
}

export function applyCredentialsUpdate(account: LocalAccount, params: ParamMap): void {
  const next = {
    displayName: account.displayName,
    note: account.note,
    fields: account.fields,
    locked: account.locked,
    bot: account.bot,
    discoverable: account.discoverable,
    indexable: account.indexable,
    hideCollections: account.hideCollections,
  };
  // Account#prepare_contents strips the display name and note of local accounts before validation.
  const displayName = stringParam(params, "display_name");
  if (displayName !== undefined) next.displayName = rubyStrip(displayName);
  const note = stringParam(params, "note");
  if (note !== undefined) next.note = rubyStrip(note);
  next.locked = booleanParam(params, "locked") ?? next.locked;
  next.bot = booleanParam(params, "bot") ?? next.bot;
  next.discoverable = booleanParam(params, "discoverable") ?? next.discoverable;
  next.indexable = booleanParam(params, "indexable") ?? next.indexable;
  next.hideCollections = booleanParam(params, "hide_collections") ?? next.hideCollections;

  const permitted = permitFieldsAttributes(params.get("fields_attributes"));
  if (permitted.kind === "server_error") throw htmlError(500, SERVER_ERROR_PAGE);
  if (permitted.kind === "rows") next.fields = assignFields(account.fields, permitted.rows);

  const errors = new ValidationErrors();
  if (!sameRows(next.fields, account.fields)) validateFields(readFields(next.fields, true), errors);
  if (
    next.displayName !== account.displayName &&
    codePointLength(next.displayName) > DISPLAY_NAME_LENGTH_LIMIT
  ) {
    errors.add("display_name", "Display name", "too_long", tooLong(DISPLAY_NAME_LENGTH_LIMIT));
  }
  if (next.note !== account.note && countableLength(next.note) > NOTE_LENGTH_LIMIT) {
    errors.add("note", "Note", "too_long", `character limit of ${NOTE_LENGTH_LIMIT} exceeded`);
  }
  if (!errors.empty) throw new HttpError(422, errors.formatted());

  Object.assign(account, next);

  // current_user.update(user_params): posting defaults under `source`, saved after the account.
  const source = mapParam(params, "source");
  if (source !== undefined) {
    const privacy = stringParam(source, "privacy");
    if (privacy !== undefined && isDefaultPrivacy(privacy)) account.settings.privacy = privacy;
    account.settings.sensitive = booleanParam(source, "sensitive") ?? account.settings.sensitive;
    const language = stringParam(source, "language");
    if (language !== undefined) account.settings.language = language === "" ? null : language;
  }
}
