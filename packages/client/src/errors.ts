// Errors raised by the client itself. Errors a service answered with come back as the protocol's
// ProtocolError (same code as on the wire); these cover what is not a protocol answer.

import { ProtocolError, type ErrorCode } from "@mastodon-mls/protocol";

/** The service could not be reached, or answered with something that is not our protocol. */
export class ServiceUnavailableError extends Error {
  constructor(
    readonly service: string,
    readonly url: string,
    detail: string,
    readonly status?: number,
  ) {
    super(`could not reach the ${service} at ${url}: ${detail}`);
    this.name = "ServiceUnavailableError";
  }
}

/**
 * A service answered with one of our protocol's error codes. Still a ProtocolError (code, details), and
 * it names the service and its URL, so that a person can tell which of several services refused.
 */
export class ServiceRefusedError extends ProtocolError {
  constructor(
    readonly service: string,
    readonly url: string,
    code: ErrorCode,
    message: string,
    details?: Record<string, unknown>,
  ) {
    super(code, message, details);
    this.name = "ServiceRefusedError";
  }
}

export type ClientErrorCode =
  | "unknown_group"
  | "group_left"
  | "not_a_member"
  | "commit_conflict"
  | "commit_outcome_unknown"
  | "message_outcome_unknown"
  | "key_package_refused"
  | "invalid_service_url"
  | "bad_input"
  // the device directory
  | "no_device"
  | "device_exists"
  | "device_busy"
  | "directory_changed"
  | "needs_migration"
  | "passphrase_required"
  | "wrong_passphrase"
  | "bad_key_derivation"
  // the account-key backup
  | "no_account_key"
  | "bad_backup"
  | "wrong_backup_secret"
  // identity (device lists, profile proofs, verification)
  | "device_list_conflict"
  | "account_key_exists"
  | "unknown_device"
  | "not_verified"
  // linking a device
  | "bad_link_code"
  | "link_timeout"
  // forks and retention gaps (docs/decisions.md D10)
  | "group_stuck"
  | "needs_readd";

/** A local refusal: the request cannot be carried out from this device's state. */
export class ClientError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ClientError";
  }
}

/**
 * A failure an operation reports and goes on from (a service refused or could not be reached, or this
 * device's state does not allow it), as opposed to a bug or a local disk error, which propagate.
 */
export function isReportable(e: unknown): e is ClientError | ProtocolError | ServiceUnavailableError {
  return e instanceof ClientError || e instanceof ProtocolError || e instanceof ServiceUnavailableError;
}
