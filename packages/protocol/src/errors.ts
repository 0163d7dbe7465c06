// The one error catalogue shared by both services and the client. A code is stable once published:
// clients branch on it, so never rename one; add a new code instead. Messages are for people.

export interface ErrorSpec {
  readonly status: number;
  readonly message: string;
}

export const errorCatalogue = {
  bad_request: { status: 400, message: "The request is malformed." },
  invalid_body: { status: 400, message: "The request body does not match the expected schema." },
  invalid_encoding: { status: 400, message: "A field is not valid base64url." },
  invalid_mls_message: {
    status: 400,
    message: "The bytes are not a well-formed MLSMessage of the expected kind.",
  },
  trailing_bytes: { status: 400, message: "The MLS encoding has trailing bytes." },
  invalid_key_package: { status: 400, message: "The KeyPackage is invalid." },
  invalid_signature: { status: 400, message: "A signature does not verify." },
  invalid_certificate: { status: 400, message: "The device certificate is invalid." },
  unsupported_ciphersuite: { status: 400, message: "This ciphersuite is not supported." },
  lifetime_invalid: {
    status: 400,
    message: "The KeyPackage lifetime is missing, expired or longer than 90 days.",
  },
  acct_mismatch: { status: 403, message: "The credential's account is not the authenticated account." },
  device_mismatch: { status: 403, message: "The key does not belong to this device." },
  unknown_device: { status: 404, message: "This device is not registered." },
  device_not_listed: {
    status: 403,
    message: "This device is not in the account's current device list; publish a list with it first.",
  },
  invalid_acct: { status: 400, message: "The account is not a canonical acct:user@domain handle." },
  foreign_account: {
    status: 404,
    message: "This account does not belong to the instance this service serves.",
  },
  payload_too_large: { status: 413, message: "The request body is too large." },
  unsupported_media_type: { status: 415, message: "This media type is not accepted here." },
  request_timeout: { status: 408, message: "The request did not arrive in time." },
  headers_too_large: { status: 431, message: "The request headers are too large." },
  too_many_items: { status: 400, message: "Too many items in one request." },
  not_found: { status: 404, message: "Not found." },
  method_not_allowed: { status: 405, message: "Method not allowed." },
  not_acceptable: { status: 406, message: "None of the media types in Accept can be served here." },
  unauthorized: { status: 401, message: "Authentication is required." },
  invalid_token: { status: 401, message: "The Mastodon access token is invalid or revoked." },
  insufficient_scope: { status: 403, message: "The Mastodon access token lacks the required scope." },
  auth_invalid: { status: 401, message: "The device signature on this request is invalid." },
  auth_expired: { status: 401, message: "The request timestamp is outside the allowed clock skew." },
  auth_replayed: { status: 401, message: "This request nonce was already used." },
  forbidden: { status: 403, message: "This device may not do that." },
  not_a_member: { status: 403, message: "This device is not a member of the group." },
  group_exists: { status: 409, message: "A group with this id already exists." },
  unknown_group: { status: 404, message: "No such group on this hub." },
  wrong_epoch: { status: 409, message: "Another commit won this epoch; process it and retry." },
  stale_epoch: { status: 409, message: "The message is for an epoch this hub no longer accepts." },
  screening_failed: { status: 422, message: "The handshake message was refused by screening." },
  group_full: { status: 422, message: "The group has reached its member limit." },
  invalid_cursor: { status: 400, message: "The cursor is not valid." },
  rate_limited: { status: 429, message: "Too many requests; retry later." },
  mastodon_unavailable: { status: 502, message: "The Mastodon instance could not be reached." },
  store_unavailable: { status: 503, message: "The storage backend is unavailable." },
  shutting_down: { status: 503, message: "The service is shutting down." },
  invalid_device_list: { status: 400, message: "The device list is malformed or does not verify." },
  stale_device_list: {
    status: 409,
    message: "The device list's version is not newer than the one already stored.",
  },
  invalid_key_rotation: {
    status: 400,
    message: "The account-key continuity statement is malformed or does not verify.",
  },
  invalid_profile_proof: { status: 400, message: "The profile proof is malformed or does not verify." },
  profile_fields_full: {
    status: 422,
    message: "All profile fields are taken; free one for the MLS field.",
  },
  profile_field_too_long: {
    status: 422,
    message: "The MLS field value is longer than the instance stores.",
  },
  profile_field_not_stored: {
    status: 502,
    message: "The instance did not store the MLS field as sent.",
  },
  mastodon_refused: { status: 502, message: "The Mastodon instance refused the profile update." },
  too_many_groups: { status: 422, message: "A device is in as many groups as this hub allows." },
  too_many_invitations: {
    status: 422,
    message: "The account has as many invitations waiting as this hub keeps; retry later.",
  },
  unknown_commit: { status: 404, message: "No accepted commit with this hash ended that epoch." },
  device_not_registered: {
    status: 403,
    message: "This device is not registered for its account at the account's instance directory.",
  },
  directory_unavailable: {
    status: 503,
    message: "The instance's key-package directory could not be asked; retry later.",
  },
  internal: { status: 500, message: "Internal error." },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof errorCatalogue;

/** The body of every HTTP error answer. Extra fields (e.g. `epoch` on `wrong_epoch`) may follow. */
export interface ErrorBody {
  error: ErrorCode;
  message: string;
  [extra: string]: unknown;
}

/** An error that knows its catalogue code. Services turn it into an HTTP answer; clients rethrow it. */
export class ProtocolError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? errorCatalogue[code].message);
    this.name = "ProtocolError";
    this.code = code;
    this.status = errorCatalogue[code].status;
    this.details = details;
  }

  toBody(): ErrorBody {
    // 500s never carry internals, whatever the message was.
    if (this.status >= 500 && this.code === "internal") {
      return { error: "internal", message: errorCatalogue.internal.message };
    }
    return { ...(this.details ?? {}), error: this.code, message: this.message };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(errorCatalogue, value);
}
