import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import swagger from "@fastify/swagger";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from "fastify";
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { z } from "zod";
import { Health, LIMITS, WellKnownServices } from "@mastodon-mls/protocol";
import { installBodyParsers } from "./rawBody.js";
import { body, installErrorHandling } from "./errorHandler.js";
import { IDLE_TIMEOUT_MS, REQUEST_TIMEOUT_MS, clientErrorHandler } from "./clientErrors.js";
import { clusterMetrics } from "./cluster.js";
import { createMetrics, installHttpMetrics, type ServiceMetrics } from "./metrics.js";
import type { Logger } from "./logger.js";

export interface ServiceAppOptions {
  /** Short service name: the metrics prefix and the OpenAPI title. */
  name: string;
  title: string;
  description: string;
  version: string;
  logger: Logger;
  bodyLimit?: number;
  /** Off unless set; neither service sets it: nothing they do depends on a client address or X-Forwarded-*. */
  trustProxy?: boolean;
  /** Collect process metrics (off in tests that start many apps). */
  defaultMetrics?: boolean;
  /** A worker of a clustered service (`startClusterPrimary`): /metrics answers for every worker. */
  clusterWorker?: boolean;
  /** A request's headers and body must arrive within this (default REQUEST_TIMEOUT_MS); tests shorten it. */
  requestTimeoutMs?: number;
  /** A connection with nothing read or written for this long is closed (default IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  /** How often Node looks for requests past their time (its default, 30 s: timeouts fire up to that late). */
  timeoutCheckMs?: number;
}

/**
 * A Fastify app with what both services share: zod validation and serialisation, the raw-body JSON
 * parser request signatures need, the error catalogue, OpenAPI at /openapi.json, request metrics.
 */
export async function createServiceApp(opts: ServiceAppOptions) {
  // Typed as Fastify's base logger so plugins accept the instance (pino's type adds msgPrefix).
  const loggerInstance: FastifyBaseLogger = opts.logger;
  const requestTimeout = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const app = Fastify({
    loggerInstance,
    bodyLimit: opts.bodyLimit ?? LIMITS.bodyBytes,
    trustProxy: opts.trustProxy ?? false,
    // Fastify's default is no limit at all: a client that sends headers and then trickles or stalls its
    // body holds a connection and a parser forever (slowloris). The headers and the whole request must
    // arrive in time; a WebSocket, once upgraded, is no longer a request and is not affected.
    requestTimeout: requestTimeout,
    http: {
      headersTimeout: requestTimeout,
      ...(opts.timeoutCheckMs === undefined ? {} : { connectionsCheckingInterval: opts.timeoutCheckMs }),
    },
    clientErrorHandler,
    // Nor had it any for a connection that stops moving (installIdleTimeout).
    connectionTimeout: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
    // In-flight requests finish on close; idle keep-alive sockets are closed at once.
    forceCloseConnections: "idle",
    return503OnClosing: true,
    // Long enough for a maximal acct (LIMITS.acctLength) percent-encoded in a path.
    routerOptions: { maxParamLength: 1024 },
    // A malformed or over-long path fails in the router, before the error handler can see it.
    frameworkErrors: (_err, _req, reply: FastifyReply) => {
      void reply.status(400).send(body("bad_request"));
    },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installBodyParsers(app);
  installErrorHandling(app);
  installClosingConnectionClose(app);
  installIdleTimeout(app);
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: opts.title, description: opts.description, version: opts.version },
      components: {
        securitySchemes: {
          device: {
            type: "apiKey",
            in: "header",
            name: "Authorization",
            description: "MLS-Device request signature (docs/protocol.md)",
          },
          bearer: { type: "http", scheme: "bearer", description: "A Mastodon access token of this instance" },
        },
      },
    },
    transform: jsonSchemaTransform,
  });
  const metrics: ServiceMetrics = createMetrics(opts.name, opts.defaultMetrics ?? false);
  installHttpMetrics(app, metrics, opts.clusterWorker ? clusterMetrics(metrics.registry) : undefined);
  app.get(
    "/openapi.json",
    {
      schema: {
        summary: "This OpenAPI 3.1 document",
        tags: ["operations"],
        response: { 200: z.looseObject({ openapi: z.string(), info: z.unknown(), paths: z.unknown() }) },
      },
    },
    // @fastify/swagger types the document as OpenAPI 2 or 3; it is always 3.1 here.
    () => app.swagger() as unknown as { openapi: string; info: unknown; paths: unknown },
  );
  return { app, metrics };
}

export type ServiceApp = Awaited<ReturnType<typeof createServiceApp>>["app"];

/**
 * Answers still in flight when close() begins carry `Connection: close`. Otherwise their keep-alive
 * connections turn idle only after "idle" connections were closed, and hold close() open until the
 * keep-alive timeout (72 s).
 */
function installClosingConnectionClose(app: FastifyInstance): void {
  let closing = false;
  app.addHook("preClose", (done) => {
    closing = true;
    done();
  });
  app.addHook("onSend", (_req, reply, payload, done) => {
    if (closing) reply.header("connection", "close");
    done(null, payload);
  });
}

/**
 * A connection on which nothing moved for idleTimeoutMs is closed once its answer has begun: a client that
 * asks for a large answer and never reads it kept the connection and the unsent rest of the answer in
 * memory for ever. Not while a handler is still working on the answer (its own limits apply: Redis, the
 * directory, Mastodon; the timer starts again when it writes), nor while the request is still arriving
 * (requestTimeout). Between requests of a kept-alive connection keepAliveTimeout applies instead, and ws
 * turns it off for a WebSocket.
 */
function installIdleTimeout(app: FastifyInstance): void {
  app.server.on("timeout", (socket: Socket) => {
    const answer = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (answer && !answer.headersSent) return;
    socket.destroy();
  });
}

export interface OperationalRoutes {
  /** True when every backend the service needs answers. */
  ready: () => Promise<boolean>;
  wellKnown: () => WellKnownServices | undefined;
}

/** /healthz (the process is up), /readyz (its backends answer), /.well-known/mls-services (DESIGN §4). */
export function installOperationalRoutes(app: ServiceApp, routes: OperationalRoutes): void {
  app.get(
    "/healthz",
    { schema: { summary: "The process is up", tags: ["operations"], response: { 200: Health } } },
    () => ({ status: "ok" as const }),
  );
  const readiness = {
    summary: "Every backend the service needs answers (503 while one does not)",
    tags: ["operations"],
    response: { 200: Health, 503: Health },
  };
  app.get("/readyz", { schema: readiness }, async (_req, reply) => {
    const ok = await routes.ready();
    return reply.status(ok ? 200 : 503).send({ status: ok ? "ok" : "unavailable" });
  });
  app.get(
    "/.well-known/mls-services",
    {
      schema: {
        summary: "Service discovery: this instance's directory and delivery service (DESIGN §4)",
        tags: ["operations"],
        response: { 200: WellKnownServices, 404: z.object({ error: z.string(), message: z.string() }) },
      },
    },
    async (_req, reply) => {
      const services = routes.wellKnown();
      if (!services)
        return reply.status(404).send({ error: "not_found", message: "Discovery is not configured." });
      reply.header("cache-control", "public, max-age=300");
      reply.header("access-control-allow-origin", "*");
      return reply.send(services);
    },
  );
}
