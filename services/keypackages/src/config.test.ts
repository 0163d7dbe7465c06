import { readFileSync } from "node:fs";
import os from "node:os";
import { describe, expect, it } from "vitest";
import { ConfigError } from "@mastodon-mls/service-kit";
import { readEnvFile } from "@mastodon-mls/testkit";
import { DEFAULT_RATE_LIMITS, DirectoryEnv, loadDirectoryConfig } from "./config.js";

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
      rateLimits: { enabled: true, ...DEFAULT_RATE_LIMITS },
      sweepIntervalSeconds: 60,
      deviceListRequired: false,
      workers: 1,
    });
  });

  it("reads WORKERS: a count, or auto for one per core, and more than one only on Redis", () => {
    const redis = { MASTODON_URL: "https://s.example", STORE: "redis", REDIS_URL: "redis://127.0.0.1:6379" };
    expect(loadDirectoryConfig({ ...redis, WORKERS: "3" }).workers).toBe(3);
    expect(loadDirectoryConfig({ ...redis, WORKERS: "auto" }).workers).toBe(os.availableParallelism());
    for (const bad of ["0", "65", "1.5", "many"]) {
      expect(() => loadDirectoryConfig({ ...redis, WORKERS: bad }), bad).toThrow(/WORKERS/);
    }
    expect(() => loadDirectoryConfig({ MASTODON_URL: "https://s.example", WORKERS: "2" })).toThrow(
      /WORKERS: more than 1 needs STORE=redis/,
    );
    expect(loadDirectoryConfig({ MASTODON_URL: "https://s.example", WORKERS: "1" }).workers).toBe(1);
  });

  it("reads DEVICE_LIST_REQUIRED (true or false only)", () => {
    const base = { MASTODON_URL: "https://s.example" };
    expect(loadDirectoryConfig({ ...base, DEVICE_LIST_REQUIRED: "true" }).deviceListRequired).toBe(true);
    expect(loadDirectoryConfig({ ...base, DEVICE_LIST_REQUIRED: "false" }).deviceListRequired).toBe(false);
    expect(() => loadDirectoryConfig({ ...base, DEVICE_LIST_REQUIRED: "yes" })).toThrow(
      /DEVICE_LIST_REQUIRED/,
    );
  });

  it("reads the rate limits and the sweep interval, and refuses nonsense there", () => {
    const config = loadDirectoryConfig({
      MASTODON_URL: "https://s.example",
      RATE_LIMITS: "off",
      RATE_LIMIT_DEVICE_MAX: "5",
      RATE_LIMIT_DEVICE_WINDOW_SECONDS: "10",
      RATE_LIMIT_DOMAIN_MAX: "50",
      RATE_LIMIT_DOMAIN_WINDOW_SECONDS: "20",
      RATE_LIMIT_TARGET_MAX: "7",
      RATE_LIMIT_TARGET_WINDOW_SECONDS: "7200",
      RATE_LIMIT_ACCOUNT_MAX: "3",
      RATE_LIMIT_ACCOUNT_WINDOW_SECONDS: "30",
      SWEEP_INTERVAL_SECONDS: "0",
    });
    expect(config.rateLimits).toEqual({
      enabled: false,
      device: { max: 5, windowSeconds: 10 },
      domain: { max: 50, windowSeconds: 20 },
      target: { max: 7, windowSeconds: 7200 },
      account: { max: 3, windowSeconds: 30 },
    });
    expect(config.sweepIntervalSeconds).toBe(0);
    expect(() =>
      loadDirectoryConfig({
        MASTODON_URL: "https://s.example",
        RATE_LIMITS: "maybe",
        RATE_LIMIT_DEVICE_MAX: "0",
        RATE_LIMIT_TARGET_WINDOW_SECONDS: "-1",
      }),
    ).toThrow(/RATE_LIMITS[\s\S]*RATE_LIMIT_DEVICE_MAX[\s\S]*RATE_LIMIT_TARGET_WINDOW_SECONDS/);
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
    // REDIS_URL and WORKERS too: checks across variables are reported with the others, not after them.
    for (const name of [
      "MASTODON_URL",
      "PUBLIC_URL",
      "PORT",
      "REDIS_PREFIX",
      "INSTANCE_DOMAIN",
      "REDIS_URL",
    ]) {
      expect(message).toContain(name);
    }
    expect(() => loadDirectoryConfig({ MASTODON_URL: "https://s.example", PORT: "x", WORKERS: "2" })).toThrow(
      /PORT[\s\S]*WORKERS: more than 1 needs STORE=redis/,
    );
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

  // An admin configures from these two; a variable missing from either is one they cannot find.
  it("is documented in the README, every variable with its default", () => {
    const text = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const start = text.indexOf("## Configuration");
    const section = text.slice(start, text.indexOf("\n## ", start + 1));
    const rows: [string, string][] = [];
    for (const [, names, cell] of section.matchAll(/^\| (`[A-Z_]+`(?: \/ `_[A-Z_]+`)?) \| ([^|]*) \|/gm)) {
      // `RATE_LIMIT_DEVICE_MAX` / `_WINDOW_SECONDS` | `120` / `60`: two variables in one row.
      const [first, suffix] = names!.split(" / ").map((n) => n.slice(1, -1));
      const defaults = cell!.trim().split(" / ");
      rows.push([first!, defaults[0]!]);
      if (suffix) rows.push([first!.replace(/_MAX$/, "") + suffix, `\`${defaults[1]!.replace(/`/g, "")}\``]);
    }
    expect(rows.map(([name]) => name).sort()).toEqual(Object.keys(DirectoryEnv.shape).sort());
    // Every default is a string or a number; the parsed environment says so only as a union of its fields.
    const defaults = DirectoryEnv.parse({ MASTODON_URL: "https://s.example" }) as Record<
      string,
      string | number | undefined
    >;
    for (const [name, cell] of rows) {
      if (name === "MASTODON_URL") expect(cell).toContain("required");
      else if (defaults[name] === undefined) expect(cell, name).not.toMatch(/^`/);
      else expect(/^`([^`]*)`/.exec(cell)?.[1], name).toBe(String(defaults[name]));
    }
  });

  it("is configured completely by infra/systemd/directory.env.example", () => {
    const example = readEnvFile(new URL("../../../infra/systemd/directory.env.example", import.meta.url));
    expect(Object.keys(example).sort()).toEqual(Object.keys(DirectoryEnv.shape).sort());
    expect(loadDirectoryConfig(example)).toMatchObject({ store: "redis", port: 7401, workers: 1 });
  });
});
