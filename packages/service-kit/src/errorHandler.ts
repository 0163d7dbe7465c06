import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ProtocolError, errorCatalogue, type ErrorBody, type ErrorCode } from "@mastodon-mls/protocol";

/** Thrown by stores when the backend cannot answer; the client sees a 503 and may retry. */
export class StoreUnavailableError extends Error {
  constructor(cause?: unknown) {
    super("store unavailable", { cause });
    this.name = "StoreUnavailableError";
  }
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "payload_too_large",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_EMPTY_JSON_BODY: "invalid_body",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "bad_request",
  FST_ERR_CTP_INVALID_JSON_BODY: "invalid_body",
  FST_ERR_BAD_URL: "bad_request",
  FST_ERR_ASYNC_CONSTRAINT: "bad_request",
};

const REDIS_ERROR_NAMES = new Set(["MaxRetriesPerRequestError", "StoreUnavailableError"]);

/**
 * Redis's refusals of a command it would run another time: out of memory under `noeviction` (OOM), writes
 * stopped after a failed save (MISCONF), a replica (READONLY), a dataset still loading (LOADING), a
 * script over its time (BUSY). The store is unavailable then, not the service broken.
 */
const REDIS_REFUSALS = /^(OOM|MISCONF|READONLY|LOADING|BUSY) /;

/**
 * A failure of the store (Redis down, unreachable, refusing, or silent past connectRedis's commandTimeout),
 * answered 503 store_unavailable.
 */
export function isStoreFailure(err: unknown): boolean {
  return (
    err instanceof Error &&
    (REDIS_ERROR_NAMES.has(err.name) ||
      (err.name === "ReplyError" && REDIS_REFUSALS.test(err.message)) ||
      /^(Connection is closed|Stream isn't writeable|connect ECONNREFUSED|Command timed out)/.test(
        err.message,
      ))
  );
}

export function body(code: ErrorCode, message?: string, extra?: Record<string, unknown>): ErrorBody {
  return { ...(extra ?? {}), error: code, message: message ?? errorCatalogue[code].message };
}

function describeValidation(err: FastifyError): string {
  const first = err.validation?.[0];
  if (!first) return errorCatalogue.invalid_body.message;
  const where = [err.validationContext, first.instancePath?.replace(/^\//, "").replaceAll("/", ".")]
    .filter(Boolean)
    .join(".");
  return `Invalid ${where || "request"}: ${first.message ?? "does not match the schema"}.`;
}

/**
 * Every error becomes `{error, message}` with a catalogue code. Anything unexpected is a 500 whose body
 * says nothing internal; the detail goes to the log only.
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof ProtocolError) {
      return reply.status(err.status).send(err.toBody());
    }
    if (err.validation) {
      const code: ErrorCode =
        err.validationContext === "querystring" || err.validationContext === "params"
          ? "bad_request"
          : "invalid_body";
      return reply.status(400).send(body(code, describeValidation(err)));
    }
    const mapped = err.code ? FASTIFY_CODES[err.code] : undefined;
    if (mapped) {
      return reply.status(errorCatalogue[mapped].status).send(body(mapped));
    }
    if (err.statusCode === 429) {
      return reply.status(429).send(body("rate_limited", err.message || undefined));
    }
    if (
      err instanceof SyntaxError ||
      (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)
    ) {
      return reply.status(400).send(body("bad_request"));
    }
    if (isStoreFailure(err)) {
      req.log.warn({ err: { name: err.name, message: err.message } }, "store unavailable");
      return reply.status(503).header("retry-after", "1").send(body("store_unavailable"));
    }
    req.log.error({ err }, "unhandled error");
    return reply.status(500).send(body("internal"));
  });
  app.setNotFoundHandler((_req, reply) => reply.status(404).send(body("not_found")));
}
