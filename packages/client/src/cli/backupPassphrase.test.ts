import { access, mkdtemp, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { capturedIo } from "../testSupport/cliIo.js";
import {
  newClient,
  resolverFor,
  startInstance,
  stopInstance,
  type Instance,
} from "../testSupport/instances.js";
import { EXIT } from "./errors.js";
import { main } from "./main.js";

// Found by an audit: `mls-dm backup --passphrase` required 8 characters only of a passphrase typed at the
// terminal; one from MLS_DM_BACKUP_PASSPHRASE (scripts, the documented way without a terminal) was taken
// as it came, so the account key could be sealed under "x". The device store's passphrase was checked
// both ways already.

let a: Instance;
beforeAll(async () => {
  a = await startInstance("a.test");
});
afterAll(async () => {
  await stopInstance(a);
});

it(
  "backup --passphrase refuses a short passphrase from MLS_DM_BACKUP_PASSPHRASE and writes nothing",
  {
    timeout: 60_000,
  },
  async () => {
    const alice = await newClient(a, "alice", resolverFor([a]), 1);
    const out = join(await mkdtemp(join(tmpdir(), "mls-dm-backup-short-")), "backup.txt");
    const io = capturedIo({ MLS_DM_BACKUP_PASSPHRASE: "x" });
    expect(await main(["--dir", alice.dir, "backup", "--passphrase", "--out", out], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("too short (at least 8 characters)");
    await expect(access(out)).rejects.toThrow();
    // A long enough one from the environment is taken.
    const ok = capturedIo({ MLS_DM_BACKUP_PASSPHRASE: "a long backup passphrase" });
    expect(await main(["--dir", alice.dir, "backup", "--passphrase", "--out", out], ok)).toBe(0);
    await access(out);
  },
);

it(
  "backup --force over an existing readable file leaves it readable by its owner only (0600)",
  {
    timeout: 60_000,
  },
  async () => {
    const bob = await newClient(a, "bob", resolverFor([a]), 1);
    const out = join(await mkdtemp(join(tmpdir(), "mls-dm-backup-force-")), "backup.txt");
    await writeFile(out, "an older file, world-readable\n", { mode: 0o644 });
    const io = capturedIo({ MLS_DM_BACKUP_PASSPHRASE: "a long backup passphrase" });
    expect(await main(["--dir", bob.dir, "backup", "--passphrase", "--force", "--out", out], io)).toBe(0);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  },
);
