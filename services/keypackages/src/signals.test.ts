import { spawn } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@mastodon-mls/testkit";

// The real entry point (src/main.ts) stopped by a signal sent twice, as systemd's default KillMode sends
// SIGTERM to every process of a cluster while its primary signals each worker too, or as Ctrl-C twice
// does: the second must not end the process before its in-flight request is answered.

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

/** A Mastodon that never answers: a bearer request stays in flight until MASTODON_TIMEOUT_MS. */
let silent: http.Server;
let mastodonUrl: string;

beforeAll(async () => {
  silent = http.createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  mastodonUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
});

afterAll(async () => {
  silent.closeAllConnections();
  await new Promise((resolve) => silent.close(resolve));
});

describe("main.ts", () => {
  it("finishes its in-flight request and exits 0 when SIGTERM comes twice", async () => {
    const child = spawn(process.execPath, ["--conditions=mastodon-mls-source", "--import", "tsx", MAIN], {
      env: {
        PATH: process.env.PATH,
        PORT: "0",
        MASTODON_URL: mastodonUrl,
        INSTANCE_DOMAIN: "a.test",
        MASTODON_TIMEOUT_MS: "1500",
        LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.once("exit", (code, signal) => resolve([code, signal])),
    );
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const url = await waitFor(() => /"url":"([^"]+)","store"/.exec(out)?.[1], { timeoutMs: 30_000 });
    const answer = new Promise<number>((resolve, reject) => {
      const req = http.request(`${url}/v1/devices/AAAAAAAAAAAAAAAAAAAAAA`, {
        method: "PUT",
        headers: { authorization: "Bearer t", "content-type": "application/json" },
        agent: false,
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end(JSON.stringify({ certificate: "AAAA" }));
    });
    await waitFor(() => out.includes('"msg":"incoming request"'), { timeoutMs: 10_000 });
    child.kill("SIGTERM");
    await waitFor(() => out.includes('"msg":"shutting down"'), { timeoutMs: 10_000 });
    child.kill("SIGTERM");
    // Answered when the call to Mastodon timed out: mastodon_unavailable, not a dropped connection.
    expect(await answer).toBe(502);
    expect(await exited).toEqual([0, null]);
  }, 60_000);
});
