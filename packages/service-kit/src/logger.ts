import { pino, type Logger, type LoggerOptions } from "pino";

// The one place loggers come from. Every logger is a named child of a root whose redaction covers
// every place a secret could ride: tokens, Authorization headers, keys and message bodies.

export type { Logger } from "pino";

export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "headers.authorization",
  "authorization",
  "token",
  "accessToken",
  "access_token",
  "*.token",
  "*.accessToken",
  "*.access_token",
  "signKey",
  "*.signKey",
  "body",
  "*.body",
  "message",
  "welcome",
];

export interface LoggerConfig {
  level: string;
  /** Service name, e.g. "delivery"; becomes the `name` of every line. */
  name: string;
}

export function createRootLogger(config: LoggerConfig, destination?: pino.DestinationStream): Logger {
  const options: LoggerOptions = {
    name: config.name,
    level: config.level,
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    // Request logging keeps the method and route only: query strings carry cursors, never headers.
    serializers: {
      req: (req: { method?: string; routeOptions?: { url?: string }; url?: string; id?: string }) => ({
        id: req.id,
        method: req.method,
        route: req.routeOptions?.url ?? req.url?.split("?")[0],
      }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

export function childLogger(parent: Logger, component: string): Logger {
  return parent.child({ component });
}

/**
 * An error as a log field: its name and message only. A stack or a cause could carry request data, and
 * an error's own fields are whatever the library that threw it put there.
 */
export function errorSummary(e: unknown): { name: string; message: string } | string {
  return e instanceof Error ? { name: e.name, message: e.message } : String(e);
}

/** A logger that writes nothing, for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
