import { connect, type Socket } from "node:net";
import { ReplyError } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ProtocolError } from "@mastodon-mls/protocol";
import { createServiceApp, installOperationalRoutes, type ServiceApp } from "./app.js";
import { CommonEnv, ConfigError, Origin, parseEnv } from "./config.js";
import { StoreUnavailableError } from "./errorHandler.js";
import { silentLogger } from "./logger.js";

let app: ServiceApp;
let ready = true;

beforeAll(async () => {
  ({ app } = await createServiceApp({
    name: "test",
    title: "t",
    description: "d",
    version: "0",
    logger: silentLogger(),
    bodyLimit: 1024,
  }));
  installOperationalRoutes(app, {
    ready: () => Promise.resolve(ready),
    wellKnown: () => ({ directory: "https://dir.a.test", delivery: "https://ds.a.test" }),
  });
  app.post("/echo", { schema: { body: z.object({ n: z.number().int() }) } }, (req) => ({
    n: req.body.n,
    raw: req.rawBody?.byteLength,
  }));
  app.get("/boom", () => {
    throw new Error("secret internal detail at /srv/db");
  });
  app.get("/store", () => {
    throw new StoreUnavailableError();
  });
  // What Redis answers a write it refuses, as ioredis reports it (seen against a real Redis).
  app.get("/redis/:reply", (req) => {
    const replies: Record<string, string> = {
      oom: "OOM command not allowed when used memory > 'maxmemory'.",
      misconf:
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
      readonly: "READONLY You can't write against a read only replica.",
      loading: "LOADING Redis is loading the dataset in memory",
      script: "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    };
    // ioredis types its ReplyError as any.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-call
    throw new ReplyError(replies[(req.params as { reply: string }).reply]) as Error;
  });
  app.get("/protocol", () => {
    throw new ProtocolError("wrong_epoch", undefined, { epoch: 4 });
  });
  await app.ready();
});
afterAll(() => app.close());

const post = (payload: string, contentType = "application/json") =>
  app.inject({ method: "POST", url: "/echo", payload, headers: { "content-type": contentType } });

describe("service app", () => {
  it("keeps the raw body for signatures", async () => {
    const r = await post('{"n": 5}');
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ n: 5, raw: 8 });
  });

  it("answers bad input with catalogue errors, never a 500", async () => {
    const cases: [string, string, number, string][] = [
      ["{", "application/json", 400, "invalid_body"],
      ["", "application/json", 400, "invalid_body"],
      ['{"n":"x"}', "application/json", 400, "invalid_body"],
      ["n=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"],
      [JSON.stringify({ n: 1, pad: "x".repeat(2000) }), "application/json", 413, "payload_too_large"],
    ];
    for (const [payload, type, status, code] of cases) {
      const r = await post(payload, type);
      expect([r.statusCode, r.json().error], payload.slice(0, 20)).toEqual([status, code]);
      expect(typeof r.json().message).toBe("string");
    }
  });

  it("hides internals of unexpected errors and maps store failures to 503", async () => {
    const r = await app.inject("/boom");
    expect(r.statusCode).toBe(500);
    expect(r.body).not.toContain("secret");
    expect(r.json()).toEqual({ error: "internal", message: "Internal error." });
    const s = await app.inject("/store");
    expect([s.statusCode, s.json().error]).toEqual([503, "store_unavailable"]);
  });

  it("answers 503 store_unavailable when Redis refuses writes (full under noeviction, failing saves, a replica)", async () => {
    // docs/operations.md: with maxmemory-policy noeviction a full Redis refuses writes and the services
    // answer 503, which clients retry; a 500 would say the service is broken.
    for (const reply of ["oom", "misconf", "readonly", "loading"]) {
      const r = await app.inject(`/redis/${reply}`);
      expect([r.statusCode, r.json().error], reply).toEqual([503, "store_unavailable"]);
    }
    // A script's own error is a bug, not an outage.
    expect((await app.inject("/redis/script")).statusCode).toBe(500);
  });

  it("passes protocol errors through with their details", async () => {
    const r = await app.inject("/protocol");
    expect(r.statusCode).toBe(409);
    expect(r.json()).toMatchObject({ error: "wrong_epoch", epoch: 4 });
  });

  it("serves health, readiness, discovery, metrics, OpenAPI and a JSON 404", async () => {
    expect((await app.inject("/healthz")).json()).toEqual({ status: "ok" });
    ready = false;
    expect((await app.inject("/readyz")).statusCode).toBe(503);
    ready = true;
    expect((await app.inject("/.well-known/mls-services")).json()).toEqual({
      directory: "https://dir.a.test",
      delivery: "https://ds.a.test",
    });
    expect((await app.inject("/metrics")).body).toContain("test_http_requests_total");
    expect((await app.inject("/openapi.json")).json().paths).toHaveProperty("/echo");
    const nf = await app.inject("/nope");
    expect([nf.statusCode, nf.json().error]).toEqual([404, "not_found"]);
  });
});

describe("config", () => {
  it("fails fast with every bad variable named", () => {
    const schema = CommonEnv.extend({ PUBLIC_URL: Origin });
    expect(() => parseEnv(schema, { PUBLIC_URL: "https://x.test/path", LOG_LEVEL: "loud" })).toThrow(
      ConfigError,
    );
    try {
      parseEnv(schema, { PUBLIC_URL: "https://x.test/path", LOG_LEVEL: "loud" });
    } catch (e) {
      expect((e as Error).message).toMatch(/PUBLIC_URL/);
      expect((e as Error).message).toMatch(/LOG_LEVEL/);
    }
    expect(parseEnv(schema, { PUBLIC_URL: "https://x.test/" }).PUBLIC_URL).toBe("https://x.test");
  });
});

describe("slow and malformed clients", () => {
  let slow: ServiceApp;
  let port: number;
  beforeAll(async () => {
    ({ app: slow } = await createServiceApp({
      name: "slow",
      title: "t",
      description: "d",
      version: "0",
      logger: silentLogger(),
      requestTimeoutMs: 300,
      timeoutCheckMs: 50,
      idleTimeoutMs: 500,
    }));
    slow.get("/big", () => ({ pad: "x".repeat(16 * 1024 * 1024) }));
    slow.post("/echo", { schema: { body: z.object({ n: z.number().int() }) } }, (req) => ({ n: req.body.n }));
    slow.get("/slowly", async () => {
      await new Promise((r) => setTimeout(r, 800));
      return { done: true };
    });
    port = Number(new URL(await slow.listen({ host: "127.0.0.1", port: 0 })).port);
  });
  afterAll(() => slow.close());

  /** Sends `text` on a raw connection; resolves to everything the server wrote once it closed (or "open"). */
  const exchange = (text: string, waitMs = 3000, onData?: (socket: Socket, got: string) => void) =>
    new Promise<string>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      let got = "";
      socket.on("data", (d) => {
        got += d.toString("latin1");
        onData?.(socket, got);
      });
      socket.on("error", () => undefined);
      socket.on("close", () => resolve(got));
      socket.write(text);
      setTimeout(() => {
        socket.destroy();
        resolve(`open after ${waitMs} ms: ${got}`);
      }, waitMs).unref();
    });
  const bodyOf = (answer: string) => JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)) as unknown;

  it("closes a connection whose body stalls, with 408 request_timeout", async () => {
    const answer = await exchange(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{",
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(bodyOf(answer)).toEqual({ error: "request_timeout", message: expect.any(String) });
  });

  it("closes a connection whose headers never end, with 408 request_timeout", async () => {
    const answer = await exchange("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(bodyOf(answer)).toMatchObject({ error: "request_timeout" });
  });

  it("answers malformed HTTP and oversized headers with catalogue errors", async () => {
    const garbage = await exchange("NOT HTTP AT ALL\r\n\r\n");
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
    expect(bodyOf(garbage)).toMatchObject({ error: "bad_request" });
    const huge = await exchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
    expect(huge).toMatch(/^HTTP\/1\.1 431 /);
    expect(bodyOf(huge)).toMatchObject({ error: "headers_too_large" });
    // Also on a kept-alive connection that answered a request before: that answer's bytes are not this one's.
    const second = await exchange("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 3000, (socket, got) => {
      if (got.includes("not_found"))
        socket.write(`GET /nope HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
    });
    expect(second).toMatch(/^HTTP\/1\.1 404 [^]*HTTP\/1\.1 431 /);
    const long = await fetch(`http://127.0.0.1:${port}/healthz?x=${"y".repeat(100_000)}`);
    expect([long.status, ((await long.json()) as { error: string }).error]).toEqual([
      431,
      "headers_too_large",
    ]);
  });

  it("closes a connection whose client stopped reading its answer", async () => {
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.pause();
    socket.write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    await new Promise((r) => setTimeout(r, 200));
    const connections = () =>
      new Promise<number>((resolve, reject) =>
        slow.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    // The answer does not fit the kernel's buffers: the rest would wait in the process for ever.
    expect(await connections()).toBe(1);
    for (let i = 0; i < 60 && (await connections()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await connections()).toBe(0);
    socket.destroy();
  });

  it("leaves a request that arrives in time alone, however long its answer takes", async () => {
    const answer = await exchange(
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{"n":1}',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    const slowly = await exchange("GET /slowly HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(slowly).toMatch(/^HTTP\/1\.1 200 /);
  });
});
