import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BodyTooLargeError, readBodyCapped } from "./fetchBody.js";

// A real HTTP server on port 0: `/n` answers n bytes ("é" counts two), sent in chunks.
let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    const n = Number(req.url?.slice(1));
    res.writeHead(200, { "content-type": "text/plain" });
    const body = Buffer.from("é".repeat(Math.floor(n / 2)) + (n % 2 === 1 ? "x" : ""));
    for (let i = 0; i < body.length; i += 1000) res.write(body.subarray(i, i + 1000));
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("readBodyCapped", () => {
  it("reads a body up to the limit, in UTF-8, across chunks", async () => {
    expect(await readBodyCapped(await fetch(`${base}/0`), 10)).toBe("");
    expect(await readBodyCapped(await fetch(`${base}/5`), 10)).toBe("ééx");
    const exact = await readBodyCapped(await fetch(`${base}/4000`), 4000);
    expect(exact).toBe("é".repeat(2000));
  });

  it("stops at the first byte over the limit", async () => {
    const err = await readBodyCapped(await fetch(`${base}/4001`), 4000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BodyTooLargeError);
    expect((err as BodyTooLargeError).message).toBe("the answer is larger than 4000 bytes");
    await expect(readBodyCapped(await fetch(`${base}/1000000`), 1000)).rejects.toThrow(BodyTooLargeError);
  });

  it("gives an empty string for an answer without a body", async () => {
    expect(await readBodyCapped(new Response(null, { status: 204 }), 10)).toBe("");
  });
});
