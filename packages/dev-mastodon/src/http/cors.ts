// Mastodon's rack-cors rules: the API, WebFinger and the token endpoints may be called from any origin
// (no cookies), so browser-based clients work against the fake as against a real instance.
import type { FastifyInstance } from "fastify";

const CORS_PATHS = [/^\/api\//, /^\/\.well-known\//, /^\/oauth\/token$/, /^\/oauth\/revoke$/];
const EXPOSED =
  "Link, X-RateLimit-Reset, X-RateLimit-Limit, X-RateLimit-Remaining, X-Request-Id, Idempotency-Key";

export function installCors(app: FastifyInstance): void {
  app.addHook("onRequest", async (req, reply) => {
    const path = req.url.split("?")[0] ?? "";
    if (req.headers.origin === undefined || !CORS_PATHS.some((re) => re.test(path))) return;
    reply.header("access-control-allow-origin", "*");
    reply.header("access-control-expose-headers", EXPOSED);
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      reply.header("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
      const requested = req.headers["access-control-request-headers"];
      if (requested !== undefined) reply.header("access-control-allow-headers", requested);
      reply.header("access-control-max-age", "7200");
      return reply.code(200).send();
    }
  });
}
