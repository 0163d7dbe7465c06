import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serviceMap, startInstance, type Instance } from "@mastodon-mls/devstack";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveCli, runCli, type CliResult } from "../testSupport/cliProcess.js";

// The mls-dm CLI end to end, every command a separate process (the bin, from the sources): two fake
// Mastodon instances with the real directory and delivery services on a real Redis; alice and bob on
// a.test, carol and dave on b.test. Create, talk (listen --json and history), add a fourth, remove one,
// leave, back up the account key and restore it on a new device, which alice's first device then adds to
// the group.

let redis: RedisHandle;
let a: Instance;
let b: Instance;
let home: string;
let map: string;

beforeAll(async () => {
  redis = await startRedis();
  const store = { kind: "redis" as const, url: redis.url, prefix: redis.keyPrefix };
  [a, b] = await Promise.all([
    startInstance({ domain: "a.test", accounts: ["alice", "bob"], store }),
    startInstance({ domain: "b.test", accounts: ["carol", "dave"], store }),
  ]);
  // Development map, with each test domain's Mastodon: members' profile proofs are looked up there.
  const services = serviceMap([a, b]);
  map = JSON.stringify(
    Object.fromEntries([a, b].map((i) => [i.domain, { ...services[i.domain]!, mastodon: i.urls.mastodon }])),
  );
  home = await mkdtemp(join(tmpdir(), "mls-dm-cli-"));
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await redis?.stop();
  await rm(home, { recursive: true, force: true });
});

const passphrase = (who: string) => `passphrase of ${who}`;

/** `mls-dm --dir <home>/<who> --services-map <both instances> …args` as `who`. */
function as(who: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(["--dir", join(home, who), "--services-map", map, ...args], {
    env: { MLS_DM_PASSPHRASE: passphrase(who), ...env },
  });
}

function live(who: string, args: string[]): LiveCli {
  return new LiveCli(["--dir", join(home, who), "--services-map", map, ...args], {
    env: { MLS_DM_PASSPHRASE: passphrase(who) },
  });
}

function ok(r: CliResult, what: string): CliResult {
  expect(r.code, `${what}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
  return r;
}

function init(who: string, instance: Instance): Promise<CliResult> {
  return as(who, [
    "init",
    "--token",
    instance.token(who),
    "--instance",
    instance.urls.mastodon,
    "--key-packages",
    "3",
  ]);
}

describe("the mls-dm CLI, each command a separate process", () => {
  it(
    "create, talk, add a fourth, remove one, leave, back up and restore on a new device",
    { timeout: 240_000 },
    async () => {
      const inits = await Promise.all([init("alice", a), init("bob", a), init("carol", b), init("dave", b)]);
      inits.forEach((r, i) => ok(r, `init #${i}`));
      const aliceDevice = /^Device ([A-Za-z0-9_-]{43}) of alice@a\.test is ready\.$/m.exec(
        inits[0].stdout,
      )?.[1];
      expect(aliceDevice).toBeDefined();

      const created = ok(await as("alice", ["create", "@bob@a.test", "@carol@b.test", "--json"]), "create");
      const group = JSON.parse(created.stdout) as {
        groupId: string;
        added: { acct: string }[];
        refused: unknown[];
      };
      expect(group.added.map((x) => x.acct).sort()).toEqual(["bob@a.test", "carol@b.test"]);
      expect(group.refused).toEqual([]);
      const g = group.groupId;

      // Identity: carol's published proof verifies; the safety number and its QR; --confirm marks it
      // verified-oob (she compared); alice's devices come from her verified device list.
      const checked = ok(await as("alice", ["verify", "@carol@b.test", "--group", g]), "verify");
      expect(checked.stdout).toMatch(/^carol@b\.test: verified$/m);
      expect(checked.stdout).toMatch(/^ {2}(\d{5} ){3}\d{5}$/m);
      expect(checked.stdout).toContain("\u2588"); // the QR code's blocks
      expect(checked.stdout).toMatch(/^Group epoch authenticator: [A-Za-z0-9_-]+$/m);
      const confirmed = JSON.parse(
        ok(await as("alice", ["verify", "@carol@b.test", "--confirm", "--json"]), "verify --confirm").stdout,
      ) as { status: string };
      expect(confirmed.status).toBe("verified-oob");
      expect(ok(await as("alice", ["devices"]), "devices").stdout).toMatch(
        /^ {2}[A-Za-z0-9_-]{43} .*\(this device\)$/m,
      );

      // carol listens live (JSON lines) while the others act; she also sends from another process meanwhile.
      const carol = live("carol", ["listen", "--json"]);
      await carol.next((l) => l.includes('"type":"joined"'), "carol joined");
      // bob has not fetched his invitation yet: naming the group (by the full id) fetches it first.
      const bobSend = ok(await as("bob", ["send", g, "hello", "from", "bob"]), "bob send");
      expect(bobSend.stderr).toContain(`you joined group ${g}`);
      await carol.next((l) => l.includes('"content":"hello from bob"'), "carol hears bob");
      ok(
        await as("carol", ["send", g, "carol here, \u001b[31mno escapes\u001b[0m"]),
        "carol send while listening",
      );

      const history = ok(await as("alice", ["history", g]), "alice history");
      expect(history.stdout).toMatch(/bob@a\.test: hello from bob/);
      // Text from others never reaches the terminal as control sequences.
      expect(history.stdout).toContain("carol@b.test: carol here, \\u{1b}[31mno escapes\\u{1b}[0m");

      // a fourth: dave on b.test (he fetches his invitation later, when he first names the group)
      expect(ok(await as("alice", ["add", g, "@dave@b.test"]), "add dave").stdout).toMatch(
        /^added dave@b\.test/m,
      );
      await carol.next(
        (l) => l.includes('"type":"member_added"') && l.includes("dave@b.test"),
        "carol sees dave added",
      );
      const removed = ok(await as("alice", ["remove", g, "@carol@b.test"]), "remove");
      expect(removed.stdout).toContain("removed carol@b.test");
      // carol's listen says so; Ctrl-C ends it with 0; every line it printed is one JSON event
      await carol.next((l) => l.includes('"type":"removed_from_group"'), "carol removed");
      expect(await carol.stop()).toBe(0);
      for (const line of carol.lines) expect(() => JSON.parse(line) as unknown).not.toThrow();

      // bob leaves (a proposal; the next member to sync commits it); then alice backs up her account key
      // (recovery key by default) and restores it on a new device directory.
      expect(ok(await as("bob", ["leave", g.slice(0, 8)]), "leave").stdout).toContain(`Left group ${g}`);
      const members = ok(await as("alice", ["members", g, "--json"]), "members");
      expect(members.stderr).toContain("bob@a.test is leaving");
      const list = JSON.parse(members.stdout) as { acct: string; status: string; self: boolean }[];
      expect(list.map((m) => `${m.acct} ${m.status}${m.self ? " self" : ""}`).sort()).toEqual([
        "alice@a.test verified self",
        "dave@b.test verified",
      ]);
      const backupFile = join(home, "alice-backup.txt");
      const made = JSON.parse(
        ok(await as("alice", ["backup", "--out", backupFile, "--json"]), "backup").stdout,
      ) as {
        recoveryKey: string;
      };
      expect(made.recoveryKey).toMatch(/^([0-9A-Z]{4}-){8}[0-9A-Z]{4}$/);
      const restoredAs = ok(
        await as(
          "alice-new",
          [
            "restore",
            backupFile,
            "--token",
            a.token("alice"),
            "--instance",
            a.urls.mastodon,
            "--key-packages",
            "2",
          ],
          { MLS_DM_RECOVERY_KEY: made.recoveryKey.toLowerCase() },
        ),
        "restore",
      );
      expect(await readFile(backupFile, "utf8")).toContain("-----BEGIN MLS-DM ACCOUNT KEY BACKUP-----");
      const newDevice =
        /^Restored the account key of alice@a\.test; new device ([A-Za-z0-9_-]{43}) is ready\.$/m.exec(
          restoredAs.stdout,
        )?.[1];
      expect(newDevice).toBeDefined();
      expect(newDevice).not.toBe(aliceDevice);
      // The restored device's certificate is good: alice's first device, at its next sync, adds it to the
      // group (an account's devices are kept in every group); dave (joining the group now, through
      // everything that happened since he was added) writes, and the new device reads it.
      ok(await as("alice", ["sync"]), "alice sync");
      const both = JSON.parse(ok(await as("alice", ["members", g, "--json"]), "members again").stdout) as {
        acct: string;
        deviceId: string;
        status: string;
      }[];
      expect(
        both
          .filter((m) => m.acct === "alice@a.test")
          .map((m) => m.deviceId)
          .sort(),
      ).toEqual([aliceDevice, newDevice].sort());
      const daveSends = ok(await as("dave", ["send", g, "welcome back"]), "dave send");
      expect(daveSends.stderr).toContain(`you joined group ${g}`);
      const newHistory = ok(await as("alice-new", ["history", g]), "new device history");
      expect(newHistory.stderr).toContain(`you joined group ${g}`);
      expect(newHistory.stdout).toMatch(/dave@b\.test: welcome back/);
    },
  );
});
