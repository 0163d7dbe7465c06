import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConfigError } from "@mastodon-mls/service-kit";
import { readEnvFile } from "@mastodon-mls/testkit";
import { DeliveryEnv, loadDeliveryConfig } from "./config.js";

describe("loadDeliveryConfig", () => {
  it("applies the defaults", () => {
    expect(loadDeliveryConfig({ INSTANCE_DOMAIN: "Example.Social" })).toEqual({
      host: "127.0.0.1",
      port: 7402,
      publicUrl: "http://127.0.0.1:7402",
      instanceDomain: "example.social",
      store: { kind: "memory" },
      logLevel: "info",
      directoryUrl: undefined,
      directoryCacheSeconds: 60,
      appEpochWindow: 2,
      retentionSeconds: 14 * 86400,
      sweepSeconds: 60,
      rateLimits: {
        windowSeconds: 60,
        submissions: 1200,
        commits: 60,
        invitations: 60,
        invitationsReceived: 120,
      },
      maxQueuedInvitations: 1000,
      pushCoalesceMs: 5,
    });
  });

  it("reads the Redis settings, treating empty variables as unset", () => {
    const config = loadDeliveryConfig({
      INSTANCE_DOMAIN: "example.social",
      STORE: "redis",
      REDIS_URL: "redis://127.0.0.1:6379/2",
      REDIS_PREFIX: "hub1:",
      PUBLIC_URL: "https://dm.example.social/",
      DIRECTORY_URL: "",
      APP_EPOCH_WINDOW: "3",
      RETENTION_SECONDS: "3600",
      RATE_COMMITS: "5",
    });
    expect(config.retentionSeconds).toBe(3600);
    expect(config.rateLimits.commits).toBe(5);
    expect(config.store).toEqual({ kind: "redis", url: "redis://127.0.0.1:6379/2", prefix: "hub1:" });
    expect(config.publicUrl).toBe("https://dm.example.social");
    expect(config.directoryUrl).toBeUndefined();
    expect(config.appEpochWindow).toBe(3);
  });

  it("needs REDIS_URL when STORE=redis", () => {
    expect(() => loadDeliveryConfig({ INSTANCE_DOMAIN: "example.social", STORE: "redis" })).toThrow(
      /REDIS_URL/,
    );
  });

  it("names every bad variable", () => {
    const bad = () =>
      loadDeliveryConfig({
        STORE: "redis",
        PUBLIC_URL: "https://dm.example.social/path",
        REDIS_PREFIX: "{g}",
        PORT: "70000",
        RETENTION_SECONDS: "5",
      });
    expect(bad).toThrow(ConfigError);
    try {
      bad();
    } catch (e) {
      // REDIS_URL too: a check across variables (STORE=redis needs it) is reported with the others.
      for (const name of [
        "INSTANCE_DOMAIN",
        "PUBLIC_URL",
        "REDIS_PREFIX",
        "PORT",
        "RETENTION_SECONDS",
        "REDIS_URL",
      ]) {
        expect((e as Error).message).toContain(name);
      }
    }
  });

  it.each([
    ["docs/operations.md", "../../../docs/operations.md", "### Delivery service"],
    ["the README", "../README.md", "## Configuration"],
  ])("is documented in %s, every variable with its default", (_name, file, heading) => {
    const text = readFileSync(new URL(file, import.meta.url), "utf8");
    const start = text.indexOf(heading);
    expect(start).toBeGreaterThanOrEqual(0);
    const section = text.slice(start, text.indexOf("\n#", start + heading.length));
    const rows = [...section.matchAll(/^\| `([A-Z_]+)` \| ([^|]*) \|/gm)].map((m) => [m[1]!, m[2]!.trim()]);
    expect(rows.map(([name]) => name).sort()).toEqual(Object.keys(DeliveryEnv.shape).sort());
    // Every default is a string or a number; the parsed environment says so only as a union of its fields.
    const defaults = DeliveryEnv.parse({ INSTANCE_DOMAIN: "a.test" }) as Record<
      string,
      string | number | undefined
    >;
    for (const [name, cell] of rows) {
      const value = name === "INSTANCE_DOMAIN" ? undefined : defaults[name!];
      if (value === undefined) expect(cell, name).toMatch(/^—/);
      else expect(/^`([^`]*)`/.exec(cell!)?.[1], name).toBe(String(value));
    }
    expect(rows.find(([name]) => name === "INSTANCE_DOMAIN")?.[1]).toContain("required");
  });

  it("is configured completely by infra/systemd/delivery.env.example", () => {
    const example = readEnvFile(new URL("../../../infra/systemd/delivery.env.example", import.meta.url));
    expect(Object.keys(example).sort()).toEqual(Object.keys(DeliveryEnv.shape).sort());
    expect(loadDeliveryConfig(example)).toMatchObject({ port: 7402, store: { kind: "redis" } });
  });
});
