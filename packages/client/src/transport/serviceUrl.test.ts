import { describe, expect, it } from "vitest";
import { ClientError } from "../errors.js";
import { StaticResolver } from "./resolver.js";
import { checkServiceUrl } from "./serviceUrl.js";

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
