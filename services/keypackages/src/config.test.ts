import { describe, expect, it } from "vitest";
import { ConfigError } from "@mastodon-mls/service-kit";
import { loadDirectoryConfig } from "./config.js";

describe("loadDirectoryConfig", () => {
  it("fills in the defaults", () => {
    expect(loadDirectoryConfig({ MASTODON_URL: "https://social.example/" })).toEqual({
      host: "127.0.0.1",
      port: 7401,
      publicUrl: "http://127.0.0.1:7401",
      mastodonUrl: "https://social.example",
      instanceDomain: undefined,
      mastodonTimeoutMs: 5000,
      store: "memory",
      redisUrl: undefined,
      redisPrefix: "kp:",
      logLevel: "info",
      deliveryUrl: undefined,
    });
  });

  it("reads every variable, canonicalising the instance domain", () => {
    const config = loadDirectoryConfig({
      HOST: "0.0.0.0",
      PORT: "8080",
      PUBLIC_URL: "https://kp.social.example",
      MASTODON_URL: "https://api.social.example",
      INSTANCE_DOMAIN: "Bücher.Example",
      MASTODON_TIMEOUT_MS: "2500",
      STORE: "redis",
      REDIS_URL: "redis://127.0.0.1:6380/2",
      REDIS_PREFIX: "dir:",
      LOG_LEVEL: "warn",
      DELIVERY_URL: "https://hub.social.example",
      UNRELATED: "ignored",
    });
    expect(config).toMatchObject({
      host: "0.0.0.0",
      port: 8080,
      instanceDomain: "xn--bcher-kva.example",
      mastodonTimeoutMs: 2500,
      store: "redis",
      redisUrl: "redis://127.0.0.1:6380/2",
      redisPrefix: "dir:",
      deliveryUrl: "https://hub.social.example",
    });
  });

  it("treats empty variables as unset", () => {
    expect(
      loadDirectoryConfig({ MASTODON_URL: "https://s.example", INSTANCE_DOMAIN: "", PORT: "" }),
    ).toMatchObject({
      instanceDomain: undefined,
      port: 7401,
    });
  });

  it("refuses bad configuration, naming every bad variable", () => {
    let error: unknown;
    try {
      loadDirectoryConfig({
        PUBLIC_URL: "https://kp.example/with/path",
        PORT: "70000",
        STORE: "redis",
        REDIS_PREFIX: "{oops}",
        INSTANCE_DOMAIN: "not a domain",
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    for (const name of ["MASTODON_URL", "PUBLIC_URL", "PORT", "REDIS_PREFIX", "INSTANCE_DOMAIN"]) {
      expect(message).toContain(name);
    }
  });

  it("refuses strings that are no URL at all with a message, not a crash", () => {
    expect(() => loadDirectoryConfig({ MASTODON_URL: "nope", DELIVERY_URL: "::" })).toThrow(ConfigError);
    expect(() =>
      loadDirectoryConfig({ MASTODON_URL: "https://s.example", STORE: "redis", REDIS_URL: "nope" }),
    ).toThrow(/REDIS_URL/);
  });

  it("needs REDIS_URL when STORE=redis", () => {
    expect(() => loadDirectoryConfig({ MASTODON_URL: "https://s.example", STORE: "redis" })).toThrow(
      /REDIS_URL: is required when STORE=redis/,
    );
  });
});
