import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { FastifyInstance } from "fastify";
import { z } from "zod";

/** One registry per app: the global one throws as soon as two apps share a process (tests). */
export interface ServiceMetrics {
  registry: Registry;
  httpRequests: Counter<"method" | "route" | "status">;
  httpDuration: Histogram<"method" | "route">;
}

export function createMetrics(prefix: string, defaults = true): ServiceMetrics {
  const registry = new Registry();
  if (defaults) collectDefaultMetrics({ register: registry, prefix: `${prefix}_` });
  return {
    registry,
    httpRequests: new Counter({
      name: `${prefix}_http_requests_total`,
      help: "HTTP requests by route and status",
      labelNames: ["method", "route", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: `${prefix}_http_request_duration_seconds`,
      help: "HTTP request duration by route",
      labelNames: ["method", "route"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}

/** `text`: the exposition served at /metrics; this process's registry unless the service is clustered. */
export function installHttpMetrics(
  app: FastifyInstance,
  metrics: ServiceMetrics,
  text: () => Promise<string> = () => metrics.registry.metrics(),
): void {
  app.addHook("onResponse", (req, reply, done) => {
    // The route pattern, never the raw URL: label values must stay few.
    const route = req.routeOptions.url ?? "unmatched";
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
    done();
  });
  const schema = {
    summary: "Prometheus metrics (text exposition format)",
    tags: ["operations"],
    response: { 200: { content: { "text/plain": { schema: z.string() } } } },
  };
  app.get("/metrics", { schema }, async (_req, reply) => {
    reply.header("content-type", metrics.registry.contentType);
    return text();
  });
}
