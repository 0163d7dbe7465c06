// Error answers with Mastodon's statuses and bodies. API controllers answer JSON `{"error": …}`; a path
// no route matches is answered by Rails' catch-all, which gives JSON only to clients that ask for it
// (Accept: application/json) and Mastodon's HTML error page to everyone else, `*/*` included.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ParamsError } from "./params.js";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Readonly<Record<string, string>> = {},
    readonly contentType = "application/json; charset=utf-8",
  ) {
    super(
      typeof body === "object" && body !== null && "error" in body ? String(body.error) : `HTTP ${status}`,
    );
  }
}

/** `render json: { error: message }, status: status`, the shape of nearly every Mastodon API error. */
export function apiError(status: number, error: string, headers: Record<string, string> = {}): HttpError {
  return new HttpError(status, { error }, headers);
}

export const recordNotFound = (): HttpError => apiError(404, "Record not found");

function errorPage(title: string, message: string): string {
  return (
    `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<title>${title} - Mastodon</title>\n</head>\n<body class="error">\n` +
    `<div class="dialog"><div class="dialog__message"><h1>${message}</h1></div></div>\n</body>\n</html>\n`
  );
}

export const NOT_FOUND_PAGE = errorPage(
  "The page you are looking for isn't here.",
  "The page you are looking for isn't here.",
);
export const SERVER_ERROR_PAGE = errorPage(
  "We're sorry, but something went wrong on our end.",
  "We're sorry, but something went wrong on our end.",
);

export function htmlError(status: number, page: string): HttpError {
  return new HttpError(status, page, {}, "text/html; charset=utf-8");
}

function prefersJson(req: FastifyRequest): boolean {
  // Rails picks the first format of the Accept header the action offers; its error responder lists
  // "any" (HTML) before JSON, so only a JSON-first Accept gets JSON.
  const first = (req.headers.accept ?? "*/*").split(",")[0]?.split(";")[0]?.trim().toLowerCase();
  return first === "application/json";
}

export function sendHttpError(reply: FastifyReply, error: HttpError): FastifyReply {
  reply.code(error.status).type(error.contentType).headers(error.headers);
  return reply.send(typeof error.body === "string" ? error.body : JSON.stringify(error.body));
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => {
    const error = prefersJson(req) ? apiError(404, "Not Found") : htmlError(404, NOT_FOUND_PAGE);
    return sendHttpError(reply, error);
  });

  app.setErrorHandler((error: unknown, req, reply) => {
    if (error instanceof HttpError) return sendHttpError(reply, error);
    if (error instanceof ParamsError) return sendHttpError(reply, apiError(400, error.message));
    const status =
      typeof error === "object" && error !== null && "statusCode" in error ? error.statusCode : 500;
    if (status === 413) {
      return sendHttpError(
        reply,
        htmlError(413, "<html><body><h1>413 Request Entity Too Large</h1></body></html>"),
      );
    }
    if (typeof status === "number" && status >= 400 && status < 500) {
      return sendHttpError(reply, apiError(status, "Error occurred while parsing request parameters"));
    }
    req.log.error({ err: error }, "unexpected error");
    return sendHttpError(reply, htmlError(500, SERVER_ERROR_PAGE));
  });
}
