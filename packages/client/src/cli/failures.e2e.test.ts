import { readFile, writeFile } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, serviceMap, startInstance, type Instance } from "@mastodon-mls/devstack";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveCli, runCli, type CliResult } from "../testSupport/cliProcess.js";
import { snapshot } from "../testSupport/dirSnapshot.js";

// The mls-dm CLI as separate processes, when things go wrong — and the real login flow against the fake
// Mastodon's OAuth (register the app, approve on its authorize page, paste the code). Wrong passphrase,
// a damaged file, an unreachable instance, unreachable services: a clear message naming what failed,
// the documented exit code, and nothing lost.

let redis: RedisHandle;
let a: Instance;
let home: string;
let map: string;

beforeAll(async () => {
  redis = await startRedis();
  a = await startInstance({
    domain: "a.test",
    accounts: ["erin", "frank"],
    store: { kind: "redis", url: redis.url, prefix: redis.keyPrefix },
  });
  map = JSON.stringify(serviceMap([a]));
  home = await mkdtemp(join(tmpdir(), "mls-dm-cli-fail-"));
});
afterAll(async () => {
  await a?.close();
  await redis?.stop();
  await rm(home, { recursive: true, force: true });
});

const PASS = "erin's long passphrase";

function as(who: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(["--dir", join(home, who), "--services-map", map, ...args], {
    env: { MLS_DM_PASSPHRASE: PASS, ...env },
  });
}

function expectExit(r: CliResult, code: number, what: string): CliResult {
  expect(r.code, `${what}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(code);
  return r;
}

/** The authorize page's approval, as a person's browser would send it: the hidden fields, the account, "approve". */
async function approve(authorizeUrl: string, username: string): Promise<string> {
  const page = await (await fetch(authorizeUrl)).text();
  const form = new URLSearchParams();
  for (const m of page.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    form.set(
      m[1]!,
      m[2]!
        .replace(/&amp;/g, "&")
        .replace(/&quot;/g, '"')
        .replace(/&#39;/g, "'"),
    );
  }
  form.set("username", username);
  form.set("decision", "approve");
  const res = await fetch(new URL("/oauth/authorize", authorizeUrl), {
    method: "POST",
    body: form,
    redirect: "manual",
  });
  const native = new URL(res.headers.get("location")!, authorizeUrl);
  const codePage = await (await fetch(native)).text();
  return /class="oauth-code" readonly type="text" value="([^"]+)"/.exec(codePage)![1]!;
}

describe("the mls-dm CLI when things go wrong", () => {
  it(
    "logs in with the real OAuth flow (code pasted on stdin), then sets up the device",
    { timeout: 120_000 },
    async () => {
      const login = new LiveCli(
        ["--dir", join(home, "erin"), "--services-map", map, "login", a.urls.mastodon],
        {
          env: { MLS_DM_PASSPHRASE: PASS },
        },
      );
      const url = await login.next((l) => l.includes("/oauth/authorize?"), "the authorize URL");
      expect(new URL(url).searchParams.get("redirect_uri")).toBe("urn:ietf:wg:oauth:2.0:oob");
      expect(new URL(url).searchParams.get("code_challenge_method")).toBe("S256");
      login.write(`${await approve(url, "erin")}\n`);
      expect(await login.wait()).toBe(0);
      expect(login.lines).toContain(`Logged in as erin@a.test (${a.urls.mastodon}).`);
      expect(login.stderr).toContain(`Next: mls-dm --dir ${join(home, "erin")} init`);

      // init uses the token the OAuth flow issued; the directory accepted it (it registered the device).
      const init = expectExit(await as("erin", ["init", "--key-packages", "2"]), 0, "init after login");
      expect(init.stdout).toMatch(/^Device [A-Za-z0-9_-]{43} of erin@a\.test is ready\.$/m);
    },
  );

  let g = "";

  it(
    "wrong passphrase, damaged file: clear errors, exit 5 and 4, nothing changed or lost",
    { timeout: 120_000 },
    async () => {
      const created = JSON.parse(expectExit(await as("erin", ["create", "--json"]), 0, "create").stdout) as {
        groupId: string;
      };
      g = created.groupId;
      expectExit(await as("erin", ["send", g, "kept safe"]), 0, "send");
      const dir = join(home, "erin");
      const before = await snapshot(dir);

      const wrong = expectExit(
        await as("erin", ["history", g], { MLS_DM_PASSPHRASE: "not erin's passphrase" }),
        5,
        "wrong passphrase",
      );
      expect(wrong.stderr).toMatch(/mls-dm: wrong passphrase/);
      expect(wrong.stdout).toBe("");
      expect(await snapshot(dir)).toEqual(before);

      const file = join(dir, "groups", g, "group.json");
      const good = await readFile(file, "utf8");
      await writeFile(
        file,
        good.replace(/"ciphertext":"(.)/, (_m, c: string) => `"ciphertext":"${c === "A" ? "B" : "A"}`),
      );
      const damaged = await snapshot(dir);
      const r = expectExit(await as("erin", ["groups", "--no-sync"]), 4, "damaged file");
      expect(r.stderr).toContain(file);
      expect(r.stderr).toMatch(/does not decrypt/);
      expect(await snapshot(dir)).toEqual(damaged);
      // Put back, the file works again (the next test goes on with this directory).
      await writeFile(file, good);
    },
  );

  it(
    "unreachable instance, unreachable services: the failing URL named, exit 2, nothing lost",
    { timeout: 120_000 },
    async () => {
      const closed = await freePort();
      const nowhere = `http://127.0.0.1:${closed}`;
      const noInstance = expectExit(await as("nobody", ["login", nowhere]), 2, "login to a closed port");
      expect(noInstance.stderr).toContain(`could not reach the Mastodon instance at ${nowhere}`);
      expect((await snapshot(home))["nobody/"]).toBeUndefined(); // nothing created

      const noServices = expectExit(
        await as("frank", [
          "init",
          "--token",
          a.token("frank"),
          "--instance",
          a.urls.mastodon,
          "--directory",
          nowhere,
          "--delivery",
          a.urls.delivery,
        ]),
        2,
        "init with an unreachable directory",
      );
      expect(noServices.stderr).toContain(`could not reach the directory at ${nowhere}`);
      expect((await snapshot(home))["frank/"]).toBeUndefined();

      // The hub of an existing group goes down: sending fails with exit 2 naming it; once it is back, the
      // group goes on and nothing was lost.
      await a.delivery.close();
      const down = expectExit(
        await as("erin", ["send", g, "while the hub is down"]),
        2,
        "send to a stopped hub",
      );
      expect(down.stderr).toContain(`could not reach the delivery service at ${a.urls.delivery}`);
      await a.restartServices();
      expectExit(await as("erin", ["send", g, "the hub is back"]), 0, "send after restart");
      const history = expectExit(await as("erin", ["history", g, "--no-sync"]), 0, "history").stdout;
      expect(history).toContain("kept safe");
      expect(history).toContain("the hub is back");
      expect(history).not.toContain("while the hub is down");
    },
  );
});
