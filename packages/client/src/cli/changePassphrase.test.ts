import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { ClientError } from "../errors.js";
import { runCli } from "../testSupport/cliProcess.js";
import { snapshot } from "../testSupport/dirSnapshot.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { Cli } from "./context.js";
import { EXIT } from "./errors.js";
import { UsageError, type Io } from "./io.js";
import { main } from "./main.js";

// `mls-dm change-passphrase`: in process with a scripted terminal (prompts, refusals, exit codes), and
// once as a separate process, as a user runs it. The store side is tested in store/rekey.test.ts.

const OLD = "the old passphrase";
const NEW = "the new passphrase";

/** A terminal (or a pipe) that answers secret prompts from `secrets`, in order. */
function scriptedIo(
  env: Record<string, string> = {},
  secrets?: string[],
): Io & { stdout: string[]; stderr: string[]; prompts: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const prompts: string[] = [];
  return {
    stdout,
    stderr,
    prompts,
    out: (t) => stdout.push(t),
    err: (t) => stderr.push(t),
    env: { MLS_DM_INSECURE_TEST_KDF: "1", ...env },
    stdinIsTty: secrets !== undefined,
    stderrIsTty: false,
    readLine: () => Promise.reject(new UsageError("no input: standard input ended")),
    readSecret: (prompt) => {
      prompts.push(prompt);
      const next = secrets?.shift();
      return next === undefined
        ? Promise.reject(new UsageError("no input: standard input ended"))
        : Promise.resolve(next);
    },
  };
}

let fake: FakeServices;
let dir: string;
beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  dir = join(await mkdtemp(join(tmpdir(), "mls-dm-chpass-")), "d");
  const alice = await MlsDmClient.create({
    dir,
    acct: "alice@a.test",
    mastodonToken: "t",
    services: { directory: fake.url, delivery: fake.url },
    protection: { kind: "passphrase", passphrase: OLD },
    insecureTestKdf: true,
    keyPackages: 1,
    publishIdentity: false,
  });
  await alice.createGroup();
});
afterEach(() => fake.stop());

const opens = async (passphrase?: string) =>
  MlsDmClient.open(dir, { insecureTestKdf: true, ...(passphrase === undefined ? {} : { passphrase }) }).then(
    (c) => c.protection,
    (e: unknown) => (e instanceof ClientError ? e.code : e),
  );

describe("mls-dm change-passphrase, in process", () => {
  it("asks for the current passphrase, then the new one twice, without echo; only the new one opens it", async () => {
    const io = scriptedIo({}, [OLD, NEW, NEW]);
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.ok);
    expect(io.prompts).toEqual([
      `Current passphrase for ${dir}: `,
      `New passphrase for ${dir}: `,
      "The same again: ",
    ]);
    expect(io.stdout).toEqual([`The passphrase of ${dir} is changed.`]);
    expect(await opens(NEW)).toBe("passphrase");
    expect(await opens(OLD)).toBe("wrong_passphrase");
  });

  it("checks the current passphrase before asking for a new one: wrong → exit 5, nothing changed", async () => {
    const before = await snapshot(dir);
    const io = scriptedIo({ MLS_DM_PASSPHRASE: "not the passphrase" }, [NEW, NEW]);
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.secret);
    expect(io.prompts).toEqual([]);
    expect(io.stderr.join("\n")).toMatch(/wrong passphrase .* stays locked/);
    expect(io.stderr.join("\n")).toContain("Nothing was changed");
    expect(await snapshot(dir)).toEqual(before);
  });

  it("refuses differing or short new passphrases, or none it can ask for (exit 1), changing nothing", async () => {
    const before = await snapshot(dir);
    let io = scriptedIo({ MLS_DM_PASSPHRASE: OLD }, ["one new passphrase", "another one"]);
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("the two passphrases differ; nothing was changed");
    io = scriptedIo({ MLS_DM_PASSPHRASE: OLD, MLS_DM_NEW_PASSPHRASE: "short" });
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("too short (at least 8 characters); nothing was changed");
    io = scriptedIo({ MLS_DM_PASSPHRASE: OLD });
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("set MLS_DM_NEW_PASSPHRASE or run in a terminal");
    io = scriptedIo();
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("set MLS_DM_PASSPHRASE or run in a terminal");
    expect(await snapshot(dir)).toEqual(before);
    io = scriptedIo();
    const missing = join(dir, "..", "nothing-here");
    expect(await main(["--dir", missing, "change-passphrase"], io)).toBe(EXIT.store);
    expect(io.stderr.join("\n")).toContain(`${missing} holds no device`);
  });

  it("--no-passphrase decrypts the directory with init's warning; a new passphrase encrypts it again", async () => {
    const warned = scriptedIo();
    await new Cli(warned, { dir }).newProtection(false);
    let io = scriptedIo({ MLS_DM_PASSPHRASE: OLD });
    expect(await main(["--dir", dir, "change-passphrase", "--no-passphrase"], io)).toBe(EXIT.ok);
    expect(io.stderr).toEqual(expect.arrayContaining(warned.stderr));
    expect(io.stdout.join("\n")).toMatch(/is no longer encrypted \(\d+ files\)/);
    expect(await opens()).toBe("none");

    const before = await snapshot(dir);
    io = scriptedIo();
    expect(await main(["--dir", dir, "change-passphrase", "--no-passphrase"], io)).toBe(EXIT.usage);
    expect(io.stderr.join("\n")).toContain("is not encrypted: there is no passphrase to remove");
    expect(await snapshot(dir)).toEqual(before);

    io = scriptedIo({}, [NEW, NEW]);
    expect(await main(["--dir", dir, "change-passphrase"], io)).toBe(EXIT.ok);
    expect(io.prompts).toEqual([`New passphrase for ${dir}: `, "The same again: "]);
    expect(io.stdout.join("\n")).toMatch(/is now encrypted under the new passphrase/);
    expect(await opens()).toBe("passphrase_required");
    io = scriptedIo({ MLS_DM_PASSPHRASE: NEW });
    expect(await main(["--dir", dir, "whoami", "--json"], io)).toBe(EXIT.ok);
    expect(JSON.parse(io.stdout[0]!)).toMatchObject({
      acct: "alice@a.test",
      protection: "passphrase",
      groups: 1,
    });
  });
});

describe("mls-dm change-passphrase, as a separate process", () => {
  it("changes the passphrase from the environment; whoami then needs the new one", async () => {
    const changed = await runCli(["--dir", dir, "change-passphrase"], {
      env: { MLS_DM_PASSPHRASE: OLD, MLS_DM_NEW_PASSPHRASE: NEW },
    });
    expect(changed.code, changed.stderr).toBe(EXIT.ok);
    expect(changed.stdout).toContain(`The passphrase of ${dir} is changed.`);
    const [withNew, withOld] = await Promise.all([
      runCli(["--dir", dir, "whoami", "--json"], { env: { MLS_DM_PASSPHRASE: NEW } }),
      runCli(["--dir", dir, "whoami", "--json"], { env: { MLS_DM_PASSPHRASE: OLD } }),
    ]);
    expect(withNew.code, withNew.stderr).toBe(EXIT.ok);
    expect(JSON.parse(withNew.stdout)).toMatchObject({ acct: "alice@a.test", protection: "passphrase" });
    expect(withOld.code).toBe(EXIT.secret);
    expect(withOld.stderr).toMatch(/wrong passphrase/);
  }, 30_000);
});
