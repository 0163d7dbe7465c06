import { describe, expect, it } from "vitest";
import { ClientError } from "../errors.js";
import { StaticResolver } from "./resolver.js";
import { checkRemoteServiceUrl, checkServiceUrl } from "./serviceUrl.js";

describe("checkServiceUrl", () => {
  it("accepts https anywhere and plain http only on loopback", () => {
    expect(checkServiceUrl("https://dm.example.social/")).toBe("https://dm.example.social");
    expect(checkServiceUrl("http://127.0.0.1:7402")).toBe("http://127.0.0.1:7402");
    expect(checkServiceUrl("http://localhost:7402/")).toBe("http://localhost:7402");
    for (const bad of [
      "http://dm.example.social",
      "ftp://x",
      "not a url",
      "https://u:p@x.test",
      "https://x.test/?q=1",
    ]) {
      expect(() => checkServiceUrl(bad), bad).toThrow(ClientError);
    }
  });

  it("StaticResolver answers for configured domains only", async () => {
    const r = new StaticResolver({
      "A.test": { directory: "http://127.0.0.1:1/", delivery: "http://127.0.0.1:2" },
    });
    expect(await r.resolve("a.test")).toEqual({
      directory: "http://127.0.0.1:1",
      delivery: "http://127.0.0.1:2",
    });
    await expect(r.resolve("b.test")).rejects.toThrow(/no services configured for b.test/);
  });
});

describe("checkRemoteServiceUrl: a URL another instance or person named (found by an audit)", () => {
  it("in production, refuses plain http, this machine, and private, link-local or special addresses", () => {
    expect(checkRemoteServiceUrl("https://dm.example.social/", false)).toBe("https://dm.example.social");
    expect(checkRemoteServiceUrl("https://93.184.216.34", false)).toBe("https://93.184.216.34");
    for (const bad of [
      "http://127.0.0.1:6379",
      "http://localhost:2375",
      "https://localhost",
      "https://api.localhost",
      "https://localhost.",
      "https://api.localhost..",
      "https://127.0.0.1",
      "https://10.0.0.1",
      "https://192.168.1.10:8443",
      "https://169.254.169.254/latest",
      "https://[::1]",
      "https://[fd00::1]",
      "https://[::ffff:10.0.0.1]",
      "https://0.0.0.0",
      "http://dm.example.social",
    ]) {
      expect(() => checkRemoteServiceUrl(bad, false), bad).toThrow(/public address|https/);
    }
  });

  it("with development services (a services map), loopback stays allowed, as for checkServiceUrl", () => {
    expect(checkRemoteServiceUrl("http://127.0.0.1:7402", true)).toBe("http://127.0.0.1:7402");
    expect(() => checkRemoteServiceUrl("http://10.0.0.1", true)).toThrow(ClientError);
  });
});
