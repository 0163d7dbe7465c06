import { mkdtemp, readdir } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { EXIT } from "./errors.js";
import { capturedIo } from "../testSupport/cliIo.js";
import { main } from "./main.js";

// `mls-dm login` against an instance that answers in the wrong shape (found by an audit): a
// verify_credentials of `null` crashed the command (exit 70, "internal error"), and a username that is
// no account name was saved as `bob@b.test@127.0.0.1`. An oversized answer is not read.

let me: unknown = null;
let huge = false;
let server: Server;
let origin = "";
beforeAll(async () => {
  server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    if (huge && path === "/api/v2/instance") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(`{"domain":"127.0.0.1","padding":"${"x".repeat(2 * 1024 * 1024)}"}`);
      return;
    }
    const answers: Record<string, unknown> = {
      "/api/v1/apps": { client_id: "id", client_secret: "secret" },
      "/oauth/token": { access_token: "token" },
      "/api/v1/accounts/verify_credentials": me,
      "/api/v2/instance": { domain: "127.0.0.1" },
      "/.well-known/mls-services": { directory: origin, delivery: origin },
    };
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(answers[path] ?? null));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function login() {
  const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-login-")), "d");
  const io = capturedIo();

  const args = [
    "--dir",
    dir,
    "login",
    origin,
    "--code",
    "abc",
    "--no-passphrase",
    "--directory",
    origin,
    "--delivery",
    origin,
  ];
  return {
    code: await main(args, io),
    stderr: io.stderr.join("\n"),
    files: await readdir(dir).catch(() => []),
  };
}

it("verify_credentials answering null: a clear error naming the instance, not an internal error", async () => {
  me = null;
  const { code, stderr, files } = await login();
  expect(stderr).not.toMatch(/internal error/);
  expect(stderr).toContain(origin);
  expect(code).toBe(EXIT.unreachable);
  expect(files).not.toContain("session.json");
});

it("a username that is not one: refused, no session saved", async () => {
  me = { username: "bob@b.test" };
  const { code, stderr, files } = await login();
  expect(code).toBe(EXIT.unreachable);
  expect(stderr).toMatch(/names no valid account/);
  expect(files).not.toContain("session.json");
});

it("an answer over 1 MiB is not read", async () => {
  me = { username: "bob" };
  huge = true;
  try {
    const { code, stderr, files } = await login();
    expect(code).toBe(EXIT.unreachable);
    expect(stderr).toMatch(/larger than 1048576 bytes/);
    expect(files).not.toContain("session.json");
  } finally {
    huge = false;
  }
});

it("a well-formed instance still logs in", async () => {
  me = { username: "Bob" };
  const { code, files } = await login();
  expect(code).toBe(EXIT.ok);
  expect(files).toContain("session.json");
});
