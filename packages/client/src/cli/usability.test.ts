import { createServer, type Server } from "node:net";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { DeviceStore } from "../store/deviceStore.js";
import { capturedIo } from "../testSupport/cliIo.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { localDevice } from "../testSupport/localDevices.js";
import { StoreFormatError } from "../store/records.js";
import { EXIT, explain } from "./errors.js";
import { main } from "./main.js";

// What a new user runs into, in process: mistakes are refused before anything happens elsewhere, with a
// message that says what to do, and the documented exit code.

let dir: string;
beforeEach(async () => {
  dir = join(await mkdtemp(join(tmpdir(), "mls-dm-usability-")), "d");
});

describe("login", () => {
  let server: Server;
  let connections: number;
  beforeEach(async () => {
    connections = 0;
    server = createServer((s) => {
      connections += 1;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  afterEach(() => new Promise((resolve) => server.close(resolve)));

  it("asks for the new directory's passphrase before the OAuth steps, not after the code is used", async () => {
    const port = (server.address() as { port: number }).port;
    const io = capturedIo();
    expect(await main(["--dir", dir, "login", `http://127.0.0.1:${port}`], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("needs a passphrase: set MLS_DM_PASSPHRASE");
    expect(connections).toBe(0);
  });

  it("checks an existing directory's passphrase before the OAuth steps too", async () => {
    await DeviceStore.create(
      dir,
      { kind: "passphrase", passphrase: "the right passphrase" },
      {
        insecureTestKdf: true,
      },
    );
    const port = (server.address() as { port: number }).port;
    const io = capturedIo({ MLS_DM_PASSPHRASE: "a wrong passphrase" });
    expect(await main(["--dir", dir, "login", `http://127.0.0.1:${port}`], io)).toBe(EXIT.secret);
    expect(connections).toBe(0);
  });
});

describe("revoke-device", () => {
  it("says a too short prefix is too short, instead of that there is no such device", async () => {
    const io = capturedIo();
    expect(await main(["--dir", dir, "revoke-device", "Xk3v"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("Xk3v is too short: give at least 6 characters");
  });
});

describe("account arguments", () => {
  it("refuses one that is not @user@domain as a usage error, before anything else (not 'a service refused')", async () => {
    for (const args of [
      ["verify", "nobody"],
      ["create", "@bob@a.test", "nobody"],
      ["add", "somegroup", "nobody"],
      ["remove", "somegroup", "nobody"],
      ["recreate", "somegroup", "--without", "nobody"],
    ]) {
      const io = capturedIo();
      expect(await main(["--dir", dir, ...args], io), args.join(" ")).toBe(EXIT.usage);
      expect(io.stderr.join("\n"), args.join(" ")).toContain("not an account (@user@domain)");
    }
  });
});

describe("sync", () => {
  it("exits 2 when a hub could not be read, not 0 as if everything had been fetched", async () => {
    const fake = new FakeServices();
    await fake.start();
    const alice = await MlsDmClient.create({
      dir,
      acct: "alice@a.test",
      mastodonToken: "t",
      services: { directory: fake.url, delivery: fake.url },
      protection: { kind: "none" },
      keyPackages: 1,
      publishIdentity: false,
    });
    const bob = await localDevice("acct:bob@a.test");
    fake.keyPackages.set("bob@a.test", {
      deviceId: bob.deviceId,
      keyPackage: (await bob.keyPackage()).encoded,
    });
    await alice.createGroup(["bob@a.test"], { allowUnverified: true });
    let io = capturedIo();
    expect(await main(["--dir", dir, "sync"], io)).toBe(EXIT.ok);
    await fake.stop();
    io = capturedIo();
    expect(await main(["--dir", dir, "sync"], io)).toBe(EXIT.unreachable);
    expect(io.stdout.join("\n")).toContain(`could not reach the delivery service at ${fake.url}`);
    expect(io.stderr.join("\n")).toContain("a hub could not be read (above): not everything new was fetched");
  });
});

describe("a damaged file in the device directory", () => {
  it("gets advice for that file: a group's is given up, any other is put back, not both", () => {
    const key = explain(new StoreFormatError("/d/store-key.json", "is not an mls-dm store key file"));
    expect(key.code).toBe(EXIT.store);
    expect(key.hint).toContain("Put back a copy of /d/store-key.json");
    expect(key.hint).not.toContain("group");
    const group = explain(new StoreFormatError("/d/groups/g1/group.json", "not JSON"));
    expect(group.hint).toContain("move its directory (/d/groups/g1) out of the device directory");
    expect(group.hint).not.toContain("Put back");
  });
});

describe("the commands mls-dm suggests", () => {
  it("carry --dir when the user gave one, so that running them as printed works", async () => {
    const io = capturedIo();
    expect(await main(["--dir", dir, "whoami"], io)).toBe(EXIT.store);
    expect(io.stderr.join("\n")).toContain(
      `holds no device: set one up with mls-dm --dir ${dir} login <instance> and then mls-dm --dir ${dir} init`,
    );
    const spaced = join(dir, "with space");
    const quoted = capturedIo();
    expect(await main(["--dir", spaced, "groups"], quoted)).toBe(EXIT.store);
    expect(quoted.stderr.join("\n")).toContain(`mls-dm --dir '${spaced}' init`);
  });
});

describe("a command's --help", () => {
  it("also lists the global options, --dir first among them", async () => {
    const io = capturedIo();
    expect(await main(["send", "--help"], io)).toBe(EXIT.ok);
    const help = io.stdout.join("\n");
    expect(help).toContain("Global Options:");
    expect(help).toContain("--dir <path>");
  });
});

describe("restore", () => {
  it("says to log in first before the backup's secret is asked or the backup opened", async () => {
    const io = capturedIo({ MLS_DM_RECOVERY_KEY: "AAAA-AAAA" });
    expect(await main(["--dir", dir, "restore", join(dir, "..", "no-such-backup.txt")], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain(`log in first: mls-dm --dir ${dir} login <instance>`);
  });
});
