// Options of createDevMastodon, checked once: a bad domain or URL fails at start, not at the first request.
import { domainToASCII } from "node:url";
import type { FastifyBaseLogger } from "fastify";
import { z } from "zod";
import type { FaultMode } from "./http/faults.js";
import type { RateLimitOptions, ThrottleOptions } from "./http/rateLimit.js";
import type { NewLocalAccount } from "./state/accounts.js";

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface DevMastodonOptions {
  /**
   * LOCAL_DOMAIN: the domain of this instance's handles (`alice@a.test`), reported as `domain` by
   * /api/v2/instance and used in WebFinger subjects. It need not resolve: the API is served at `url`.
   */
  domain: string;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port to listen on. Default 0 (any free port). */
  port?: number;
  /**
   * Origin used in every URL the instance renders (account `uri` and `url`, WebFinger links), when it
   * is served behind a proxy at another address. Default: the address it listens on.
   */
  publicUrl?: string;
  /** Instance title. Default "Dev Mastodon (<domain>)". */
  title?: string;
  /**
   * Mastodon version to claim. Default "4.6.0". Below 4.6, /api/v2/instance omits the profile-field
   * limits (max_profile_fields, profile_field_name_limit, profile_field_value_limit), as older instances do.
   */
  version?: string;
  /** Local accounts created at start. */
  accounts?: readonly NewLocalAccount[];
  /** A pino (or other Fastify-compatible) logger. */
  logger?: FastifyBaseLogger;
  /** Log level of the built-in logger, when no `logger` is given. Default "silent". */
  logLevel?: LogLevel;
  /** API throttles; Mastodon's (1500 per user and 300 per IP address, per 5 minutes) by default. */
  rateLimits?: Partial<RateLimitOptions>;
  /** False behaves like DISALLOW_UNAUTHENTICATED_API_ACCESS=true. Default true. */
  unauthenticatedApi?: boolean;
  /** A fault to start with. Default "none". */
  fault?: FaultMode;
}

const throttle = z.object({ limit: z.number().int().min(1), periodSeconds: z.number().int().min(1) });

const schema = z.object({
  domain: z
    .string()
    .min(1)
    .transform((d) => domainToASCII(d.trim()).toLowerCase())
    .refine((d) => /^[a-z0-9-]+(\.[a-z0-9-]+)*(:\d+)?$/.test(d), "domain must be a host name, e.g. a.test"),
  host: z.string().min(1).default("127.0.0.1"),
  port: z.number().int().min(0).max(65535).default(0),
  publicUrl: z
    .url({ protocol: /^https?$/ })
    .transform((u) => new URL(u).origin)
    .optional(),
  title: z.string().optional(),
  version: z
    .string()
    .regex(/^\d+\.\d+\.\d+/, "version must look like 4.6.0")
    .default("4.6.0"),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("silent"),
  rateLimits: z
    .object({ authenticated: throttle.optional(), unauthenticated: throttle.optional() })
    .default({}),
  unauthenticatedApi: z.boolean().default(true),
});

export interface ResolvedOptions {
  readonly domain: string;
  readonly host: string;
  readonly port: number;
  readonly publicUrl?: string | undefined;
  readonly title: string;
  readonly version: string;
  readonly logLevel: LogLevel;
  readonly rateLimits: Partial<Record<keyof RateLimitOptions, ThrottleOptions>>;
  readonly unauthenticatedApi: boolean;
}

export function resolveOptions(options: DevMastodonOptions): ResolvedOptions {
  const parsed = schema.safeParse({
    domain: options.domain,
    host: options.host,
    port: options.port,
    publicUrl: options.publicUrl,
    title: options.title,
    version: options.version,
    logLevel: options.logLevel,
    rateLimits: options.rateLimits,
    unauthenticatedApi: options.unauthenticatedApi,
  });
  if (!parsed.success) throw new Error(`invalid dev-mastodon options: ${z.prettifyError(parsed.error)}`);
  const o = parsed.data;
  return { ...o, title: o.title ?? `Dev Mastodon (${o.domain})` };
}
