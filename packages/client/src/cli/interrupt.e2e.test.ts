import { createServer, type Server, type Socket } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveCli } from "../testSupport/cliProcess.js";

// Ctrl-C while a command waits for a service that does not answer (a stopped or hung instance): the
// user is told what is going on, and a second Ctrl-C quits at once with 130, instead of nothing
// happening until the request's 30 s timeout.

let server: Server;
let port: number;
let home: string;
const sockets: Socket[] = [];

beforeAll(async () => {
  // Accepts connections and never answers.
  server = createServer((s) => sockets.push(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
  home = await mkdtemp(join(tmpdir(), "mls-dm-interrupt-"));
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => server.close(resolve));
  await rm(home, { recursive: true, force: true });
});

const until = async (what: () => boolean, ms: number): Promise<void> => {
  const end = Date.now() + ms;
  while (!what() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
};

describe("Ctrl-C during a command waiting for a service", () => {
  it("says so after the first, and quits at once (130) on the second", { timeout: 20_000 }, async () => {
    const login = new LiveCli(
      ["--dir", join(home, "d"), "login", `http://127.0.0.1:${port}`, "--directory", "http://127.0.0.1:1"],
      { env: { MLS_DM_PASSPHRASE: "a long enough passphrase" } },
    );
    await until(() => sockets.length > 0, 10_000);
    expect(sockets.length).toBeGreaterThan(0);
    login.interrupt();
    await until(() => login.stderr.includes("Ctrl-C again"), 3_000);
    expect(login.stderr).toContain("Ctrl-C again quits now");
    const started = Date.now();
    expect(await login.stop()).toBe(130);
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});
