// Errors raised by the client itself. Errors a service answered with come back as the protocol's
// ProtocolError (same code as on the wire); these cover what is not a protocol answer.

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

export type ClientErrorCode =
  | "unknown_group"
  | "group_left"
  | "not_a_member"
  | "commit_conflict"
  | "commit_outcome_unknown"
  | "key_package_refused"
  | "invalid_service_url"
  | "bad_input";

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
