import { ErrorBodySchema } from "@mastodon-mls/protocol";

/** The error answers a route documents in OpenAPI; every one has the `{error, message}` body. */
export function errorResponses<S extends number>(...statuses: S[]): Record<S, typeof ErrorBodySchema> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorBodySchema])) as Record<S, typeof ErrorBodySchema>;
}
