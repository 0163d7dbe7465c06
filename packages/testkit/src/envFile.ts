import { readFileSync } from "node:fs";

/**
 * The `NAME=value` lines of an environment file as systemd's EnvironmentFile reads the simple ones in
 * infra/systemd (no quotes, no continuation lines); blank lines and `#` comments are skipped.
 */
export function readEnvFile(url: URL): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(url, "utf8").split("\n")) {
    if (!line.trim() || line.startsWith("#")) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`${url.pathname}: not NAME=value: ${line}`);
    env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}
