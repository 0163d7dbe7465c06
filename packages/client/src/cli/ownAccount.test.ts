import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice } from "../testSupport/localDevices.js";
import { EXIT } from "./errors.js";
import { UsageError, type Io } from "./io.js";
import { main } from "./main.js";

// `leave --with` and `block` naming the user's own account are refused (review of 2026-11-27: `block`
// said "Already blocked" and both left every group one of the user's other devices is in).

function fakeIo(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (t) => stdout.push(t),
    err: (t) => stderr.push(t),
    env: { MLS_DM_INSECURE_TEST_KDF: "1" },
    stdinIsTty: false,
    stderrIsTty: false,
    readLine: () => Promise.reject(new UsageError("no input: standard input ended")),
    readSecret: () => Promise.reject(new UsageError("no input: standard input ended")),
  };
}

describe("own account in leave --with / block", () => {
  let fake: FakeServices;
  let dir: string;
  beforeEach(async () => {
    fake = new FakeServices();
    await fake.start();
    dir = join(await mkdtemp(join(tmpdir(), "mls-dm-own-")), "d");
  });
  afterEach(() => fake.stop());

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

  /** A group of alice's with bob and alice's own second device (her phone) in it. */
  const groupWithOwnPhone = async (alice: MlsDmClient) => {
    const phone = await localDevice("acct:alice@a.test");
    const bob = await localDevice("acct:bob@a.test");
    fake.keyPackages.set("alice@a.test", {
      deviceId: phone.deviceId,
      keyPackage: (await phone.keyPackage()).encoded,
    });
    fake.keyPackages.set("bob@a.test", {
      deviceId: bob.deviceId,
      keyPackage: (await bob.keyPackage()).encoded,
    });
    const { groupId } = await alice.createGroup(["bob@a.test", "alice@a.test"], { allowUnverified: true });
    expect(alice.members(groupId).filter((m) => m.acct === "alice@a.test").length).toBe(2);
    return groupId;
  };

  it("`block <own account>` is refused, and leaves no group the user's other devices are in", async () => {
    const alice = await plainAlice();
    const groupId = await groupWithOwnPhone(alice);
    const io = fakeIo();
    const code = await main(["--dir", dir, "block", "@alice@a.test"], io);
    expect(io.stdout.join("\n")).not.toContain("Already blocked");
    expect(io.stdout.some((l) => l.startsWith(`Left group ${groupId}.`))).toBe(false);
    expect(fake.departures.map((d) => d.groupId)).toEqual([]);
    expect(code).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("own account");
  });

  it("`leave --with <own account>` is refused, and leaves no group", async () => {
    const alice = await plainAlice();
    const groupId = await groupWithOwnPhone(alice);
    const io = fakeIo();
    expect(await main(["--dir", dir, "leave", "--with", "@alice@a.test"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("own account");
    expect(io.stdout.some((l) => l.startsWith(`Left group ${groupId}.`))).toBe(false);
    expect(fake.departures.map((d) => d.groupId)).toEqual([]);
  });
});
