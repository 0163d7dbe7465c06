import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProtocolError } from "@mastodon-mls/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { ClientError, ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import { MastodonError } from "../mastodon/oauth.js";
import { StoreFormatError } from "../store/records.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice } from "../testSupport/localDevices.js";
import { EXIT, explain } from "./errors.js";
import { safeText } from "./io.js";
import { buildProgram, main } from "./main.js";
import { capturedIo } from "../testSupport/cliIo.js";

// The CLI's parsing, help and exit codes, in this process (main() with a scripted terminal). The
// commands themselves run as separate processes in the *.e2e.test.ts files.

const fakeIo = capturedIo;

describe("mls-dm, parsing and help", () => {
  it("has --help for every command, and the top-level help documents exit codes and the environment", async () => {
    const names = buildProgram(fakeIo(), new AbortController().signal).commands.map((c) => c.name());
    expect(names).toEqual(
      expect.arrayContaining([
        "login",
        "init",
        "whoami",
        "groups",
        "create",
        "add",
        "remove",
        "readd",
        "leave",
        "block",
        "unblock",
        "send",
        "listen",
        "history",
        "members",
        "backup",
        "restore",
        "migrate",
        "change-passphrase",
        "sync",
        "verify",
        "devices",
        "link-device",
        "revoke-device",
        "recreate",
      ]),
    );
    for (const name of names) {
      const io = fakeIo();
      expect(await main([name, "--help"], io), name).toBe(EXIT.ok);
      expect(io.stdout.join("\n"), name).toContain(`Usage: mls-dm ${name}`);
    }
    const io = fakeIo();
    expect(await main(["--help"], io)).toBe(0);
    const help = io.stdout.join("\n");
    for (const text of [
      "Exit codes:",
      "  5  wrong passphrase",
      "130  interrupted",
      "MLS_DM_PASSPHRASE",
      "MLS_DM_NEW_PASSPHRASE",
      "MLS_DM_HOME",
    ])
      expect(help).toContain(text);
  });

  it("exits 1 on bad usage", async () => {
    expect(await main(["frobnicate"], fakeIo())).toBe(EXIT.usage);
    expect(await main(["send"], fakeIo())).toBe(EXIT.usage);
    expect(await main(["link-device", "--timeout", "0"], fakeIo())).toBe(EXIT.usage);
  });
});

describe("mls-dm against a device directory, in process", () => {
  let fake: FakeServices;
  let dir: string;
  beforeEach(async () => {
    fake = new FakeServices();
    await fake.start();
    dir = join(await mkdtemp(join(tmpdir(), "mls-dm-main-")), "d");
  });
  afterEach(() => fake.stop());

  /** alice's device in `dir`, on plain files, against the stand-in services. */
  const plainAlice = () =>
    MlsDmClient.create({
      dir,
      acct: "alice@a.test",
      mastodonToken: "t",
      services: { directory: fake.url, delivery: fake.url },
      protection: { kind: "none" },
      keyPackages: 1,
      publishIdentity: false,
    });

  /** A group of alice's with `acct` in it (a device of theirs made here, its KeyPackage at the stand-in). */
  const groupOf = async (alice: MlsDmClient, acct: string) => {
    const device = await localDevice(`acct:${acct}`);
    const kp = await device.keyPackage();
    fake.keyPackages.set(acct, { deviceId: device.deviceId, keyPackage: kp.encoded });
    return (await alice.createGroup([acct], { allowUnverified: true })).groupId;
  };

  it("leaves every group a given person is in, and at the hub too (leave --with)", async () => {
    const alice = await plainAlice();
    const spam = [await groupOf(alice, "mallory@a.test"), await groupOf(alice, "mallory@a.test")];
    const friends = await groupOf(alice, "bob@a.test");
    let io = fakeIo();
    expect(await main(["--dir", dir, "leave"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("--with");
    io = fakeIo();
    expect(await main(["--dir", dir, "leave", "--with", "not an account"], io)).toBe(EXIT.usage);
    io = fakeIo();
    expect(await main(["--dir", dir, "leave", "--with", "@mallory@a.test"], io)).toBe(EXIT.ok);
    const left = io.stdout.flatMap((l) => /^Left group (\S+)\./.exec(l)?.[1] ?? []);
    expect(left.sort()).toEqual([...spam].sort());
    expect(fake.departures.map((d) => d.groupId).sort()).toEqual([...spam].sort());
    io = fakeIo();
    expect(await main(["--dir", dir, "groups", "--json", "--no-sync"], io)).toBe(EXIT.ok);
    const after = JSON.parse(io.stdout.join("")) as { groupId: string; status: string }[];
    expect(Object.fromEntries(after.map((g) => [g.groupId, g.status]))).toEqual({
      [spam[0]!]: "left",
      [spam[1]!]: "left",
      [friends]: "active",
    });
    io = fakeIo();
    expect(await main(["--dir", dir, "leave", "--with", "@mallory@a.test"], io)).toBe(EXIT.ok);
    expect(io.stdout.join("\n")).toContain("No group of yours has mallory@a.test in it.");
  });

  it("blocks people (leaving the groups shared with them), lists and unblocks them", async () => {
    const alice = await plainAlice();
    const groupId = await groupOf(alice, "mallory@a.test");
    let io = fakeIo();
    expect(await main(["--dir", dir, "block", "@mallory@a.test"], io)).toBe(EXIT.ok);
    expect(io.stdout[0]).toBe("Blocked mallory@a.test: groups they are in are declined from now on.");
    expect(io.stdout.some((l) => l.startsWith(`Left group ${groupId}.`))).toBe(true);
    expect(fake.departures.map((d) => d.groupId)).toEqual([groupId]);
    io = fakeIo();
    expect(await main(["--dir", dir, "block", "--json"], io)).toBe(EXIT.ok);
    expect(JSON.parse(io.stdout.join(""))).toEqual(["mallory@a.test"]);
    io = fakeIo();
    expect(await main(["--dir", dir, "unblock", "@mallory@a.test", "@nobody@a.test"], io)).toBe(EXIT.ok);
    expect(io.stdout).toEqual(["Unblocked mallory@a.test."]);
    io = fakeIo();
    expect(await main(["--dir", dir, "block"], io)).toBe(EXIT.ok);
    expect(io.stdout).toEqual(["Nobody is blocked."]);
  });

  it("refuses the own account in `block` and `leave --with`, leaving no group the user's other devices are in", async () => {
    const alice = await plainAlice();
    // A group with bob and alice's own second device (her phone) in it.
    const phone = await localDevice("acct:alice@a.test");
    fake.keyPackages.set("alice@a.test", {
      deviceId: phone.deviceId,
      keyPackage: (await phone.keyPackage()).encoded,
    });
    const groupId = await groupOf(alice, "bob@a.test");
    await alice.addMembers(groupId, ["alice@a.test"], { allowUnverified: true });
    expect(alice.members(groupId).filter((m) => m.acct === "alice@a.test")).toHaveLength(2);
    for (const args of [
      ["block", "@alice@a.test"],
      ["leave", "--with", "@alice@a.test"],
    ]) {
      const io = fakeIo();
      expect(await main(["--dir", dir, ...args], io), args.join(" ")).toBe(EXIT.usage);
      expect(io.stderr.join("\n")).toContain("own account");
      expect(io.stdout.join("\n")).not.toContain("Already blocked");
    }
    expect(fake.departures).toEqual([]);
    expect(alice.groups().find((g) => g.groupId === groupId)?.status).toBe("active");
  });

  it("names a missing device (4), an unknown group (1), and needs a passphrase it cannot ask for (1)", async () => {
    let io = fakeIo();
    expect(await main(["--dir", dir, "whoami"], io)).toBe(EXIT.store);
    expect(io.stderr.join("\n")).toContain(`${dir} holds no device`);
    await MlsDmClient.create({
      dir,
      acct: "alice@a.test",
      mastodonToken: "t",
      services: { directory: fake.url, delivery: fake.url },
      protection: { kind: "passphrase", passphrase: "long enough pass" },
      insecureTestKdf: true,
      keyPackages: 1,
      publishIdentity: false,
    });
    io = fakeIo();
    expect(await main(["--dir", dir, "whoami"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("set MLS_DM_PASSPHRASE or run in a terminal");
    io = fakeIo({ MLS_DM_PASSPHRASE: "long enough pass" });
    expect(await main(["--dir", dir, "send", "nosuchgroup", "hi"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("no group nosuchgroup on this device");
    io = fakeIo({ MLS_DM_PASSPHRASE: "long enough pass" });
    expect(await main(["--dir", dir, "whoami", "--json"], io)).toBe(EXIT.ok);
    expect(JSON.parse(io.stdout[0]!)).toMatchObject({ acct: "alice@a.test", protection: "passphrase" });
    // A link code that is not one: refused before anything is changed, saying what to do.
    io = fakeIo({ MLS_DM_PASSPHRASE: "long enough pass" });
    expect(await main(["--dir", dir, "link-device", "--approve", "MLSDM-LINK1-garbage!"], io)).toBe(
      EXIT.usage,
    );
    expect(io.stderr.join("\n")).toContain("not a valid link code");
    io = fakeIo({ MLS_DM_PASSPHRASE: "long enough pass" });
    expect(await main(["--dir", dir, "init"], io)).toBe(EXIT.store);
    expect(io.stderr.join("\n")).toContain("already holds a set-up device");
  });

  it("refuses a short new passphrase, and warns loudly about --no-passphrase", async () => {
    const io = fakeIo();
    const cli = await import("./context.js");
    const c = new cli.Cli(io, { dir });
    expect(await c.newProtection(false)).toEqual({ kind: "none" });
    expect(io.stderr.join("\n")).toMatch(/--no-passphrase: .* stored unencrypted/);
    await expect(
      new cli.Cli(fakeIo({ MLS_DM_PASSPHRASE: "short" }), { dir }).newProtection(true),
    ).rejects.toThrow(/too short/);
  });
});

describe("exit codes and advice", () => {
  it("maps every kind of failure to its documented code, naming what failed", () => {
    const cases: [unknown, number, RegExp][] = [
      [
        new ServiceUnavailableError("delivery service", "https://hub.example", "fetch failed"),
        2,
        /delivery service at https:\/\/hub.example/,
      ],
      [
        new ServiceRefusedError("directory", "https://dir.example", "invalid_token", "bad token"),
        3,
        /directory at https:\/\/dir.example refused \(invalid_token\)/,
      ],
      [
        new ServiceRefusedError("delivery service", "https://hub.example", "store_unavailable", "down"),
        2,
        /store_unavailable/,
      ],
      [new ProtocolError("rate_limited"), 3, /rate_limited/],
      [
        new MastodonError("unreachable", "https://m.example", "fetch failed"),
        2,
        /Mastodon instance at https:\/\/m.example/,
      ],
      [new MastodonError("refused", "https://m.example", "401"), 3, /refused/],
      [new StoreFormatError("/x/groups/g/group.json", "does not decrypt"), 4, /\/x\/groups\/g\/group.json/],
      [new ClientError("wrong_passphrase", "wrong passphrase"), 5, /wrong passphrase/],
      [
        new ClientError("wrong_backup_secret", "the recovery key does not open this backup"),
        5,
        /recovery key/,
      ],
      [new ClientError("device_busy", "another mls-dm process (pid 7)"), 4, /pid 7/],
      [new ClientError("commit_outcome_unknown", "kept"), 2, /kept/],
      [new ClientError("unknown_group", "no such group"), 1, /no such group/],
      [Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" }), 4, /permission denied/],
      [new TypeError("oops"), 70, /internal error/],
    ];
    for (const [e, code, message] of cases) {
      const x = explain(e);
      expect(x.code, String(e)).toBe(code);
      expect(x.message).toMatch(message);
    }
    expect(explain(new ServiceRefusedError("directory", "u", "invalid_token", "m")).hint).toMatch(
      /mls-dm login/,
    );
    // A post with no answer may have reached the group: never "nothing was lost, try again" (a second
    // copy), but how to find out.
    const uncertain = explain(new ClientError("message_outcome_unknown", "could not reach the hub"));
    expect(uncertain.code).toBe(EXIT.unreachable);
    expect(uncertain.hint).toMatch(/Do not send it again yet.*mls-dm sync/);
    expect(uncertain.hint).not.toMatch(/try again/i);
  });

  it("never lets text from others drive the terminal", () => {
    expect(safeText("hi \u001b[2J\u0007 there\u202e")).toBe("hi \\u{1b}[2J\\u{7} there\\u{202e}");
    // Lines after the first are indented, so no text can print a line that reads as mls-dm's own; a
    // second pass changes nothing.
    expect(safeText("line one\nline two")).toBe("line one\n    line two");
    expect(safeText(safeText("line one\nline two"))).toBe("line one\n    line two");
  });
});
