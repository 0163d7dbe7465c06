// One log line per answered request, with secrets taken out of the URL: Doorkeeper accepts tokens in
// the query string (`access_token`, `bearer_token`) and the OAuth flow carries codes and secrets there,
// which Fastify's own request logging would write out verbatim.
import type { FastifyInstance } from "fastify";

const SECRET_PARAMS = new Set([
  "access_token",
  "bearer_token",
  "code",
  "code_verifier",
  "client_secret",
  "token",
]);

export function redactUrl(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  const params = new URLSearchParams(url.slice(q + 1));
  for (const key of [...params.keys()]) if (SECRET_PARAMS.has(key)) params.set(key, "[redacted]");
  return `${url.slice(0, q)}?${params.toString()}`;
}

export function installRequestLog(app: FastifyInstance): void {
  app.addHook("onResponse", async (req, reply) => {
    req.log.info(
      {
        method: req.method,
        url: redactUrl(req.url),
        statusCode: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      "request completed",
    );
  });
}
