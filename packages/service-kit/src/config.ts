import { z } from "zod";
import { parseAcct } from "@mastodon-mls/protocol";

// Config is read from the environment once, at start, and validated; nothing else reads process.env.

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * Parses `env` with `schema`, or throws a ConfigError naming every bad variable. An empty variable
 * (`FOO=` in a unit file) means "not set", not "set to nothing", so its default applies.
 */
export function parseEnv<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined>,
): z.infer<S> {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const result = schema.safeParse(present);
  if (result.success) return result.data;
  const lines = result.error.issues.map((i) => `  ${i.path.join(".") || "(env)"}: ${i.message}`);
  throw new ConfigError(`Invalid configuration:\n${lines.join("\n")}`);
}

export const LogLevel = z
  .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
  .default("info");

export const Port = z.coerce.number().int().min(0).max(65535);

/** An http(s) origin with no path, query or fragment: the exact origin clients sign requests for. */
export const Origin = z
  .string()
  .url()
  .refine((u) => {
    // zod 4 runs refinements even after .url() failed: a string that is no URL must not throw here.
    if (!URL.canParse(u)) return false;
    const url = new URL(u);
    return (
      (url.protocol === "https:" || url.protocol === "http:") &&
      url.pathname === "/" &&
      !url.search &&
      !url.hash
    );
  }, "must be an http(s) origin without a path, e.g. https://dm.example.social")
  .transform((u) => new URL(u).origin);

export const RedisUrl = z
  .string()
  .url()
  .refine(
    (u) => URL.canParse(u) && /^rediss?:$/.test(new URL(u).protocol),
    "must be a redis:// or rediss:// URL",
  );

/** The environment variables both services share. */
export const CommonEnv = z.object({
  HOST: z.string().default("127.0.0.1"),
  LOG_LEVEL: LogLevel,
  /** `memory` is the embedded default for development; production uses `redis`. */
  STORE: z.enum(["memory", "redis"]).default("memory"),
  REDIS_URL: RedisUrl.optional(),
  /** The directory of this instance and the delivery service, as advertised at /.well-known/mls-services. */
  DIRECTORY_URL: Origin.optional(),
  DELIVERY_URL: Origin.optional(),
});

/**
 * For a check across variables (`superRefine`): run it even when a variable failed on its own, so that a
 * bad configuration is reported whole, not one round of fixes at a time. Such a check must then accept
 * any value in the variables it reads (it sees the raw ones where they failed).
 */
export const EVEN_WITH_OTHER_ISSUES = { when: () => true };

export function requireRedisWhenSelected(
  cfg: { STORE: "memory" | "redis"; REDIS_URL?: string | undefined },
  ctx: z.RefinementCtx,
): void {
  if (cfg.STORE === "redis" && !cfg.REDIS_URL) {
    ctx.addIssue({ code: "custom", path: ["REDIS_URL"], message: "is required when STORE=redis" });
  }
}

/** The instance's LOCAL_DOMAIN, canonical: lower-case IDNA A-label, as in every acct. */
export const InstanceDomain = z.string().transform((text, ctx) => {
  try {
    return parseAcct(`user@${text}`).domain;
  } catch {
    ctx.addIssue({ code: "custom", message: "must be a domain name, e.g. example.social" });
    return z.NEVER;
  }
});

/** A key prefix for one service's Redis keys. No braces: keys carry their own hash tags. */
export const RedisPrefix = z.string().regex(/^[A-Za-z0-9:_.-]{1,64}$/, "letters, digits and : _ . - only");
