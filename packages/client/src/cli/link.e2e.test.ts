import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serviceMap, startInstance, type Instance } from "@mastodon-mls/devstack";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveCli, runCli, type CliResult } from "../testSupport/cliProcess.js";

// Linking a second device with the mls-dm CLI, each command a separate process, against two fake
// Mastodon instances and the real services on a real Redis (docs/protocol.md "Linking a device"): the
// new device shows a code and waits; the first device approves it with the confirmation code, which
// publishes a new device list and profile proof and adds the new device to its groups; both devices
// read and write; the new one is revoked and reads nothing after that. Last, a contact who lost every
// device starts over with a new account key, and is shown as key-changed.

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
    startInstance({ domain: "b.test", accounts: ["carol"], store }),
  ]);
  const services = serviceMap([a, b]);
  map = JSON.stringify(
    Object.fromEntries([a, b].map((i) => [i.domain, { ...services[i.domain]!, mastodon: i.urls.mastodon }])),
  );
  home = await mkdtemp(join(tmpdir(), "mls-dm-link-"));
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await redis?.stop();
  await rm(home, { recursive: true, force: true });
});

const env = (who: string) => ({ MLS_DM_PASSPHRASE: `passphrase of ${who}` });
const base = (who: string) => ["--dir", join(home, who), "--services-map", map];
const as = (who: string, args: string[]): Promise<CliResult> =>
  runCli([...base(who), ...args], { env: env(who) });

function ok(r: CliResult, what: string): CliResult {
  expect(r.code, `${what}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
  return r;
}

const token = (who: string, i: Instance) => ["--token", i.token(who), "--instance", i.urls.mastodon];

describe("mls-dm link-device", () => {
  it(
    "links a second device that reads and writes in the groups, refuses a wrong confirmation, revokes it; a contact's replaced key shows as key-changed",
    { timeout: 240_000 },
    async () => {
      const inits = await Promise.all([
        as("alice", ["init", ...token("alice", a), "--key-packages", "3"]),
        as("bob", ["init", ...token("bob", a), "--key-packages", "3"]),
        as("carol", ["init", ...token("carol", b), "--key-packages", "3"]),
      ]);
      inits.forEach((r, i) => ok(r, `init #${i}`));
      const g = (
        JSON.parse(
          ok(await as("alice", ["create", "@bob@a.test", "@carol@b.test", "--json"]), "create").stdout,
        ) as {
          groupId: string;
        }
      ).groupId;

      // The new device: its code and confirmation on the first line, then it waits.
      const phone = new LiveCli(
        [
          ...base("alice-phone"),
          "link-device",
          ...token("alice", a),
          "--name",
          "phone",
          "--key-packages",
          "2",
          "--json",
        ],
        { env: env("alice-phone") },
      );
      const shown = JSON.parse(await phone.next((l) => l.includes('"code"'), "the link code")) as {
        code: string;
        confirmation: string;
        deviceId: string;
      };
      expect(shown.confirmation).toMatch(/^\d{4}-\d{4}-\d{4}$/);

      // A mistyped confirmation changes nothing.
      const wrong = await as("alice", [
        "link-device",
        "--approve",
        shown.code,
        "--confirm-code",
        "0000-0000-0000",
      ]);
      expect(wrong.code, wrong.stderr).toBe(1);
      expect(wrong.stderr).toContain("does not match");
      expect(ok(await as("alice", ["devices", "--json"]), "devices").stdout).not.toContain(shown.deviceId);

      const approved = JSON.parse(
        ok(
          await as("alice", [
            "link-device",
            "--approve",
            shown.code,
            "--confirm-code",
            shown.confirmation,
            "--json",
          ]),
          "approve",
        ).stdout,
      ) as { deviceId: string; version: number; accountKey: string; addedTo: string[]; pending: number };
      expect(approved).toMatchObject({ deviceId: shown.deviceId, version: 2, addedTo: [g], pending: 0 });
      // LNK-12: both show the account key's fingerprint, and it is the same.
      expect(approved.accountKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const linked = JSON.parse(
        await phone.next((l) => l.includes('"linked":true'), "the phone is linked"),
      ) as { accountKey: string };
      expect(linked.accountKey).toBe(approved.accountKey);
      expect(await phone.wait()).toBe(0);

      // The phone holds no account key, and cannot approve links itself.
      const who = JSON.parse(ok(await as("alice-phone", ["whoami", "--json"]), "whoami").stdout) as {
        holdsAccountKey: boolean;
        deviceId: string;
      };
      expect(who).toMatchObject({ holdsAccountKey: false, deviceId: shown.deviceId });
      const notHere = await as("alice-phone", [
        "link-device",
        "--approve",
        shown.code,
        "--confirm-code",
        "1",
      ]);
      expect(notHere.code).toBe(1);
      expect(notHere.stderr).toContain("does not hold the account key");

      // Both of alice's devices read bob; bob reads the phone; everyone sees alice's two verified devices.
      ok(await as("bob", ["send", g, "hello to both of you"]), "bob send");
      const phoneHistory = ok(await as("alice-phone", ["history", g]), "phone history");
      expect(phoneHistory.stderr).toContain(`you joined group ${g}`);
      expect(phoneHistory.stdout).toMatch(/bob@a\.test: hello to both of you/);
      expect(ok(await as("alice", ["history", g]), "alice history").stdout).toMatch(
        /bob@a\.test: hello to both/,
      );
      ok(await as("alice-phone", ["send", g, "from the phone"]), "phone send");
      expect(ok(await as("carol", ["history", g]), "carol history").stdout).toMatch(
        /alice@a\.test: from the phone/,
      );
      // On the laptop, what the phone said is the user's own too.
      expect(ok(await as("alice", ["history", g]), "alice history of the phone").stdout).toMatch(
        /alice@a\.test \(you, another device\): from the phone/,
      );
      const members = JSON.parse(ok(await as("carol", ["members", g, "--json"]), "members").stdout) as {
        acct: string;
        deviceId: string;
        status: string;
      }[];
      expect(members.filter((m) => m.acct === "alice@a.test").map((m) => m.status)).toEqual([
        "verified",
        "verified",
      ]);
      expect(members.some((m) => m.deviceId === shown.deviceId)).toBe(true);

      // Revoked: out of the group at once; what is said afterwards does not reach it.
      expect(ok(await as("alice", ["revoke-device", "--", shown.deviceId]), "revoke").stdout).toContain(
        "Removed from 1 group(s).",
      );
      ok(await as("bob", ["send", g, "after the revocation"]), "bob send again");
      const after = ok(await as("alice-phone", ["history", g]), "phone history after");
      expect(after.stdout).not.toContain("after the revocation");
      expect(after.stderr).toContain(`you are no longer in group ${g}`);
      // The phone is told why, when it looks at the account's devices.
      const phoneDevices = ok(await as("alice-phone", ["devices"]), "phone devices after");
      expect(phoneDevices.stderr).toContain(
        `This device (${shown.deviceId}) is not in the list: it was revoked`,
      );
      expect(ok(await as("alice", ["history", g]), "alice history after").stdout).toContain(
        "after the revocation",
      );

      // carol lost everything: a plain init is refused (her account has a key) and says what to do; with
      // --new-account-key she starts over, and alice, who pinned the old key, sees key-changed.
      const refusedInit = await as("carol-again", ["init", ...token("carol", b)]);
      expect(refusedInit.code, refusedInit.stderr).toBe(1);
      expect(refusedInit.stderr).toContain("already has an account key");
      expect(refusedInit.stderr).toContain("mls-dm link-device");
      ok(
        await as("carol-again", ["init", ...token("carol", b), "--new-account-key"]),
        "init --new-account-key",
      );
      const changed = JSON.parse(
        ok(await as("alice", ["verify", "@carol@b.test", "--json"]), "verify").stdout,
      ) as {
        status: string;
      };
      expect(changed.status).toBe("key-changed");
      const inGroup = JSON.parse(ok(await as("alice", ["members", g, "--json"]), "members after").stdout) as {
        acct: string;
        status: string;
      }[];
      expect(inGroup.find((m) => m.acct === "carol@b.test")?.status).toBe("key-changed");
      // The readable warning ends with the command to run once checked, which runs as printed.
      const warned = ok(await as("alice", ["verify", "@carol@b.test"]), "verify, readable").stdout;
      const suggested = /then: (mls-dm .*)$/m.exec(warned)?.[1];
      expect(suggested).toBe(`mls-dm --dir ${join(home, "alice")} verify carol@b.test --accept-new-key`);
      const accepted = ok(await as("alice", suggested!.split(" ").slice(3)), "the suggested command").stdout;
      expect(accepted).not.toContain("WARNING");
    },
  );
});
