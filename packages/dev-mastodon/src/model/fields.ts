// Profile fields with Mastodon's semantics (Account::Fields, Account::Field, the strong parameters of
// update_credentials and EmptyProfileFieldNamesValidator):
// - `fields_attributes` replaces the whole set; rows with a blank name and a blank value are dropped;
// - rows are stored as sent and sanitised when read: stripped, then cut to 255 characters, silently;
// - `verified_at` survives only on a row whose value is exactly the value of a verified old row;
// - more than 4 rows, or a value without a name, fails validation (422).
import { isBlankString, rubyStrip, takeCodePoints } from "../format/escape.js";
import { isParamMap, ParamMap, UploadedFile, type ParamValue } from "../http/params.js";
import type { FieldScalar, StoredField } from "../state/accounts.js";
import { tooLong, type ValidationErrors } from "./validation.js";

export const MAX_FIELDS = 4;
export const FIELD_LIMIT_LOCAL = 255;
export const FIELD_LIMIT_REMOTE = 2047;

export interface ProfileField {
  readonly name: string;
  readonly value: string;
  /** As Mastodon renders it (`2019-08-29T04:14:55.571+00:00`), or null. */
  readonly verifiedAt: string | null;
}

/** DateTime#as_json, the form `verified_at` takes in API answers. */
export function formatVerifiedAt(date: Date): string {
  return date.toISOString().replace(/Z$/, "+00:00");
}

/**
 * Account#fields. A row whose name or value is not a string (absent, a number, a file) makes Ruby
 * raise in Field#initialize, and Account#fields skips it: it is stored but never shown.
 */
export function readFields(rows: readonly StoredField[], local: boolean): ProfileField[] {
  const limit = local ? FIELD_LIMIT_LOCAL : FIELD_LIMIT_REMOTE;
  const out: ProfileField[] = [];
  for (const row of rows) {
    if (typeof row.name !== "string" || typeof row.value !== "string") continue;
    const verified = row.verified_at === undefined ? null : new Date(row.verified_at);
    if (verified !== null && Number.isNaN(verified.getTime())) continue;
    out.push({
      name: takeCodePoints(rubyStrip(row.name), limit),
      value: takeCodePoints(rubyStrip(row.value), limit),
      verifiedAt: verified === null ? null : formatVerifiedAt(verified),
    });
  }
  return out;
}

function isScalar(value: ParamValue | undefined): value is FieldScalar {
  return (
    value === null ||
    typeof value === "string" ||
    typeof value === "number" ||
    typeof value === "boolean" ||
    value instanceof UploadedFile
  );
}

/** `params.permit(fields_attributes: [:name, :value])` applied to one row. */
function permitRow(row: ParamMap): StoredField {
  const out: StoredField = {};
  const name = row.get("name");
  const value = row.get("value");
  if (row.has("name") && isScalar(name)) out.name = name;
  if (row.has("value") && isScalar(value)) out.value = value;
  return out;
}

export type PermittedFields =
  | { readonly kind: "absent" }
  | { readonly kind: "rows"; readonly rows: StoredField[] }
  /** A hash that is not keyed by indices: Mastodon raises on it (HTTP 500). */
  | { readonly kind: "server_error" };

/**
 * What strong parameters let through of `fields_attributes`: an array of hashes, or a hash keyed by
 * indices ("0".."3", Rails' fields_for style) read in the order sent. A scalar is dropped (no change).
 * Any other hash is permitted as one row whose *values* Account#fields_attributes= then iterates: with
 * a name or value in it, that is calling `[:name]` on a String, a TypeError Mastodon answers with a 500.
 */
export function permitFieldsAttributes(value: ParamValue | undefined): PermittedFields {
  if (Array.isArray(value)) return { kind: "rows", rows: value.filter(isParamMap).map(permitRow) };
  if (!isParamMap(value)) return { kind: "absent" };
  const fieldsForStyle = [...value].every(([k, v]) => /^-?\d+$/.test(k) && isParamMap(v));
  if (fieldsForStyle) return { kind: "rows", rows: [...value.values()].filter(isParamMap).map(permitRow) };
  const row = permitRow(value);
  return Object.keys(row).length === 0 ? { kind: "rows", rows: [] } : { kind: "server_error" };
}

// Object#blank? for what a field row can hold.
function blank(value: FieldScalar | undefined): boolean {
  if (value === undefined || value === null || value === false) return true;
  return typeof value === "string" && isBlankString(value);
}

/** Account#fields_attributes=: the new rows, keeping `verified_at` where the value is unchanged. */
export function assignFields(oldRows: readonly StoredField[], rows: readonly StoredField[]): StoredField[] {
  const out: StoredField[] = [];
  for (const row of rows) {
    if (blank(row.name) && blank(row.value)) continue;
    const previous = oldRows.find((old) => (old.value ?? null) === (row.value ?? null));
    const stored: StoredField = { ...row };
    if (previous?.verified_at !== undefined && previous.verified_at !== "")
      stored.verified_at = previous.verified_at;
    out.push(stored);
  }
  return out;
}

/** The two validations Account::Fields adds, run on the fields as read (sanitised, unreadable rows gone). */
export function validateFields(fields: readonly ProfileField[], errors: ValidationErrors): void {
  if (fields.length > MAX_FIELDS) errors.add("fields", "Fields", "too_long", tooLong(MAX_FIELDS));
  if (fields.some((f) => isBlankString(f.name) && !isBlankString(f.value))) {
    errors.add(
      "fields",
      "Fields",
      "fields_with_values_missing_labels",
      "contains values with missing labels",
    );
  }
}

export function sameRows(a: readonly StoredField[], b: readonly StoredField[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Marks a field verified, as Mastodon's link verification does when the page links back with rel=me. */
export function markVerified(rows: StoredField[], name: string, at: Date): boolean {
  const row = rows.find((r) => typeof r.name === "string" && rubyStrip(r.name) === name);
  if (row === undefined) return false;
  row.verified_at = at.toISOString();
  return true;
}
