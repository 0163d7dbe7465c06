import {
  MASTODON_MAX_PROFILE_FIELDS,
  MASTODON_PROFILE_FIELD_VALUE_LIMIT,
  PROFILE_FIELD_NAME,
  ProtocolError,
} from "@mastodon-mls/protocol";
import { fieldValueText, parseProfileFieldValue, type ProfileProofIn } from "./profileProof.js";

// The profile's fields as a set: finding the one `MLS` field when reading (lookup) and putting it in
// place when writing (publishing), without disturbing the user's other fields.

export interface ProfileField {
  name: string;
  value: string;
}

export type MlsFieldResult =
  | { kind: "proof"; proof: ProfileProofIn }
  | { kind: "none" }
  | { kind: "duplicate"; count: number }
  | { kind: "malformed"; reason: string };

/**
 * Names are compared after Mastodon's own strip, and case-sensitively: `mls` is someone else's field. A
 * name longer than Mastodon allows (255 characters) is not ours to read: an instance serving one of
 * megabytes gets no work done on it.
 */
function isMlsField(f: ProfileField): boolean {
  return f.name.length <= 1024 && fieldValueText(f.name) === PROFILE_FIELD_NAME;
}

/** PF-5: exactly one field named `MLS`; two is an error of its own, never "the first one wins". */
export function findMlsField(fields: readonly ProfileField[]): MlsFieldResult {
  const mls = fields.filter(isMlsField);
  if (mls.length === 0) return { kind: "none" };
  if (mls.length > 1) return { kind: "duplicate", count: mls.length };
  try {
    return { kind: "proof", proof: parseProfileFieldValue(mls[0]!.value) };
  } catch (e) {
    if (e instanceof ProtocolError) return { kind: "malformed", reason: e.message };
    throw e;
  }
}

export interface FieldLimits {
  maxFields: number;
  valueLimit: number;
}

export const MASTODON_FIELD_LIMITS: FieldLimits = {
  maxFields: MASTODON_MAX_PROFILE_FIELDS,
  valueLimit: MASTODON_PROFILE_FIELD_VALUE_LIMIT,
};

/**
 * PUB-2: the new field set. The `MLS` field keeps its place (a duplicate is dropped, as only we write
 * that name); otherwise it goes last. Every other field keeps its raw value and its order. PUB-3 and
 * PUB-4: refused when no slot is free or the instance would cut the value (Mastodon truncates silently).
 */
export function withMlsField(
  current: readonly ProfileField[],
  value: string,
  limits: FieldLimits = MASTODON_FIELD_LIMITS,
): ProfileField[] {
  if ([...value].length > limits.valueLimit) {
    throw new ProtocolError(
      "profile_field_too_long",
      `The MLS field value is ${[...value].length} characters; the instance stores at most ${limits.valueLimit}.`,
    );
  }
  const out: ProfileField[] = [];
  let placed = false;
  for (const f of current) {
    if (isMlsField(f)) {
      if (!placed) out.push({ name: PROFILE_FIELD_NAME, value });
      placed = true;
    } else {
      out.push({ name: f.name, value: f.value });
    }
  }
  if (!placed) {
    if (out.length >= limits.maxFields) {
      throw new ProtocolError(
        "profile_fields_full",
        `All ${limits.maxFields} profile fields are taken; remove one so the MLS field fits.`,
      );
    }
    out.push({ name: PROFILE_FIELD_NAME, value });
  }
  return out;
}
