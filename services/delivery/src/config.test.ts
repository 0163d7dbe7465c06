import { describe, expect, it } from "vitest";
import { ConfigError } from "@mastodon-mls/service-kit";
import { loadDeliveryConfig } from "./config.js";

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
      appEpochWindow: 2,
      retentionSeconds: 14 * 86400,
      sweepSeconds: 60,
      rateLimits: { windowSeconds: 60, submissions: 1200, commits: 60, invitations: 60 },
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
      for (const name of ["INSTANCE_DOMAIN", "PUBLIC_URL", "REDIS_PREFIX", "PORT", "RETENTION_SECONDS"]) {
        expect((e as Error).message).toContain(name);
      }
    }
  });
});
