import { z } from "zod";
import { b64url } from "./schemas.js";

// Identity: what binds an MLS device to a Mastodon account (DESIGN §3, docs/identity.md). The signed
// objects themselves are built and checked in the bridge; this file holds what crosses package lines.

/** Signed by the old account key over `{acct, old_key, new_key, issued_at}` when the account key changes. */
export const LABEL_ACCOUNT_KEY_ROTATION = "mastodon-mls account-key-rotation v1";

/** The profile field carrying the proof: exactly one field with this name. */
export const PROFILE_FIELD_NAME = "MLS";
/** `mls1.<fp>.<ver>.<sig>`, matched after tags are stripped and entities decoded. */
export const PROFILE_FIELD_PATTERN = /^mls1\.[A-Za-z0-9_-]{43}\.[0-9]{1,10}\.[A-Za-z0-9_-]{86}$/;
/** Mastodon's limits on profile fields (Account::DEFAULT_FIELDS_SIZE, Account::Field value limit). */
export const MASTODON_MAX_PROFILE_FIELDS = 4;
export const MASTODON_PROFILE_FIELD_VALUE_LIMIT = 255;

/** The largest device-list version the profile field can name (10 decimal digits). */
export const MAX_DEVICE_LIST_VERSION = 9_999_999_999;
/** A device's name in the device list: UTF-8, at most this many bytes. */
export const DEVICE_NAME_MAX_BYTES = 64;
export const DEVICE_LIST_MAX_BYTES = 8 * 1024;
export const KEY_ROTATION_MAX_BYTES = 1024;
/** Continuity statements a directory keeps and serves per account (oldest dropped first). */
export const KEY_ROTATIONS_PER_ACCOUNT = 16;

/** The verification status of a member, per acct (DESIGN §3). */
export const MEMBER_STATUSES = [
  "verified",
  "verified-oob",
  "key-changed",
  "invalid",
  "revoked",
  "no-proof",
  "stale",
  "suspended",
  "moved",
  "gone",
  "unreachable",
] as const;
export type MemberStatusName = (typeof MEMBER_STATUSES)[number];

/**
 * PUT /v1/accounts/:acct/device-list — bearer token; the list is signed by the account key. When the
 * list's account key differs from the stored list's, `key_rotation` may carry the old key's signature over
 * the new one (a continuity statement), which the directory keeps and serves. Without one the change is
 * still accepted (the user may have lost the old key, I5); peers who pinned the old key see `key-changed`.
 */
export const PutDeviceListBody = z.object({
  device_list: b64url(DEVICE_LIST_MAX_BYTES),
  key_rotation: b64url(KEY_ROTATION_MAX_BYTES).optional(),
});
export type PutDeviceListBody = z.infer<typeof PutDeviceListBody>;

/** The continuity statements of an account, oldest first, as served next to its device list. */
export const KeyRotations = z.array(b64url(KEY_ROTATION_MAX_BYTES)).max(KEY_ROTATIONS_PER_ACCOUNT);
export type KeyRotations = z.infer<typeof KeyRotations>;
