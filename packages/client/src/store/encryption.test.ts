import { copyFile, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { DEFAULT_KDF, kdfParamsFor } from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import { allFiles, snapshot } from "../testSupport/dirSnapshot.js";
import { decodeState, decodeStateDelta, encodeState } from "../mls/codec.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { DeviceStore } from "./deviceStore.js";
import { StoreFormatError } from "./records.js";

// Encryption at rest of a device directory (format 2). Every store here uses the cheap test KDF
// parameters (insecureTestKdf): the real ones cost seconds per derivation (see backup.test.ts).

const TEST = { insecureTestKdf: true } as const;
const PASS = "a long enough passphrase";
const NO_WAIT = { attempts: 3, baseDelayMs: 0, maxDelayMs: 0 };
let fake: FakeServices;

beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
});
afterEach(() => fake.stop());

async function device(protection: "passphrase" | "none" = "passphrase"): Promise<MlsDmClient> {
  return MlsDmClient.create({
    ...TEST,
    dir: join(await mkdtemp(join(tmpdir(), "mls-dm-enc-")), "alice"),
    acct: "alice@a.test",
    mastodonToken: "token-SECRET-0123456789",
    services: { directory: fake.url, delivery: fake.url },
    protection: protection === "passphrase" ? { kind: "passphrase", passphrase: PASS } : { kind: "none" },
    keyPackages: 2,
    publishIdentity: false,
    retry: NO_WAIT,
  });
}

/** `null`: no passphrase given. */
const reopen = (c: MlsDmClient, passphrase: string | null = PASS) =>
  MlsDmClient.open(c.dir, { ...TEST, ...(passphrase === null ? {} : { passphrase }), retry: NO_WAIT });

function codeOf(e: unknown): string | undefined {
  return e instanceof ClientError ? e.code : undefined;
}

describe("a passphrase-protected device directory", () => {
  it("holds no secret in the clear: keys, token, KeyPackages, group state, messages", async () => {
    const alice = await device();
    const { groupId } = await alice.createGroup();
    await alice.send(groupId, "the secret plan is at noon");
    const store = await DeviceStore.open(alice.dir, { ...TEST, passphrase: PASS });
    const dev = await store.readDevice();
    const group = await store.readGroup(groupId);
    const kp = await store.readKeyPackage((await store.listKeyPackageRefs())[0]!);
    const secrets = [
      dev.mastodonToken,
      dev.deviceKey.signKey,
      dev.accountKey!.signKey,
      kp!.initPrivateKey,
      kp!.hpkePrivateKey,
      group!.state!.slice(40, 100),
      "the secret plan",
      "alice@a.test", // even the metadata inside
    ];
    const files = await allFiles(alice.dir);
    expect([...files.keys()].map((p) => p.slice(alice.dir.length + 1)).sort()).toEqual(
      expect.arrayContaining([
        "device.json",
        "store-key.json",
        `groups/${groupId}/group.json`,
        `groups/${groupId}/history.jsonl`,
      ]),
    );
    for (const [path, bytes] of files) {
      const text = bytes.toString("utf8");
      for (const s of secrets) expect(text.includes(s), `${s} in ${path}`).toBe(false);
      expect((await stat(path)).mode & 0o777, path).toBe(0o600);
    }
    expect((await stat(alice.dir)).mode & 0o777).toBe(0o700);
    expect(await alice.history(groupId)).toMatchObject([
      { content: { activity: { object: { content: "the secret plan is at noon" } } } },
    ]);
  });

  it("a wrong passphrase is a clear error and changes nothing on disk; no passphrase is asked for", async () => {
    const alice = await device();
    const { groupId } = await alice.createGroup();
    await alice.send(groupId, "hello");
    const before = await snapshot(alice.dir);
    const wrong = await reopen(alice, "not the passphrase").catch((e: unknown) => e);
    expect(codeOf(wrong)).toBe("wrong_passphrase");
    expect((wrong as Error).message).toMatch(/wrong passphrase/);
    expect(codeOf(await reopen(alice, null).catch((e: unknown) => e))).toBe("passphrase_required");
    expect(await snapshot(alice.dir)).toEqual(before);
    expect((await reopen(alice)).epoch(groupId)).toBe(0);
  });

  it("names a damaged file, touches nothing else, and works again once the file is put back", async () => {
    const alice = await device();
    const { groupId } = await alice.createGroup();
    const path = join(alice.dir, "groups", groupId, "group.json");
    const good = await readFile(path, "utf8");
    const json = JSON.parse(good) as { ciphertext: string };
    const flipped = json.ciphertext[10] === "A" ? "B" : "A";
    await writeFile(
      path,
      JSON.stringify({
        ...json,
        ciphertext: json.ciphertext.slice(0, 10) + flipped + json.ciphertext.slice(11),
      }),
    );
    const before = await snapshot(alice.dir);
    const e = await reopen(alice).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(StoreFormatError);
    expect((e as StoreFormatError).path).toBe(path);
    expect((e as Error).message).toMatch(/does not decrypt/);
    expect(await snapshot(alice.dir)).toEqual(before);
    await writeFile(path, good);
    expect((await reopen(alice)).groups()).toHaveLength(1);
    // Truncated to nothing: named too.
    await writeFile(path, "");
    expect(((await reopen(alice).catch((err: unknown) => err)) as StoreFormatError).path).toBe(path);
  });

  it("binds each file to its place: a group's file copied into another group, or a KeyPackage renamed, is refused", async () => {
    const alice = await device();
    const a = (await alice.createGroup()).groupId;
    const b = (await alice.createGroup()).groupId;
    const target = join(alice.dir, "groups", b, "group.json");
    await copyFile(join(alice.dir, "groups", a, "group.json"), target);
    expect(((await reopen(alice).catch((e: unknown) => e)) as StoreFormatError).path).toBe(target);
    await rm(join(alice.dir, "groups", b), { recursive: true });
    const store = await DeviceStore.open(alice.dir, { ...TEST, passphrase: PASS });
    const [ref1, ref2] = await store.listKeyPackageRefs();
    await copyFile(join(store.keyPackagesDir, `${ref1}.json`), join(store.keyPackagesDir, `${ref2}.json`));
    await expect(store.readKeyPackage(ref2!)).rejects.toThrow(/does not decrypt/);
  });

  it("seals history line by line: a torn last line is skipped, an altered line is named", async () => {
    const alice = await device();
    const { groupId } = await alice.createGroup();
    await alice.send(groupId, "one");
    await alice.send(groupId, "two");
    const path = join(alice.dir, "groups", groupId, "history.jsonl");
    const text = await readFile(path, "utf8");
    await writeFile(path, `${text}\n{"v":2,"nonce":"abc`);
    expect((await alice.history(groupId)).length).toBe(2);
    const lines = text.split("\n");
    lines[1] = lines[1]!.replace(
      /"ciphertext":"(.)/,
      (_m, c: string) => `"ciphertext":"${c === "A" ? "B" : "A"}`,
    );
    await writeFile(path, lines.join("\n"));
    await expect(alice.history(groupId)).rejects.toThrow(/history.jsonl: line 2 does not decrypt/);
  });

  it("binds the KDF header: a changed parameter fails like a wrong passphrase; test parameters need the test switch", async () => {
    const alice = await device();
    const keyPath = join(alice.dir, "store-key.json");
    const good = await readFile(keyPath, "utf8");
    const file = JSON.parse(good) as { kdf: { t: number; m: number; p: number } };
    expect(file.kdf).toMatchObject({ m: 64, t: 1, p: 1 });
    await writeFile(keyPath, JSON.stringify({ ...file, kdf: { ...file.kdf, t: 2 } }));
    expect(codeOf(await reopen(alice).catch((e: unknown) => e))).toBe("wrong_passphrase");
    await writeFile(keyPath, good);
    const strict = await MlsDmClient.open(alice.dir, { passphrase: PASS }).catch((e: unknown) => e);
    expect(codeOf(strict)).toBe("bad_key_derivation");
  });

  it("uses DESIGN §9's Argon2id parameters unless a test asks for cheap ones", () => {
    expect(kdfParamsFor({})).toEqual({ m: 65536, t: 3, p: 4 });
    expect(DEFAULT_KDF).toEqual({ m: 65536, t: 3, p: 4 });
    expect(kdfParamsFor(TEST)).toEqual({ m: 64, t: 1, p: 1 });
  });
});

describe("restoring the account key on a new device", () => {
  it("certifies a new device with the same account key, in a new encrypted directory", async () => {
    const alice = await device();
    const { text, recoveryKey } = await alice.backupAccountKey(TEST);
    const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-restore-")), "alice2");
    const wrong = await MlsDmClient.restore({
      ...TEST,
      dir,
      backup: text,
      secret: "0000-0000-0000-0000-0000-0000-0000-0000-0000",
      protection: { kind: "passphrase", passphrase: PASS },
      mastodonToken: "token",
      services: { directory: fake.url, delivery: fake.url },
    }).catch((e: unknown) => e);
    expect(codeOf(wrong)).toMatch(/wrong_backup_secret/);
    expect(await DeviceStore.inspect(dir)).toEqual({ kind: "absent" }); // nothing created
    const restored = await MlsDmClient.restore({
      ...TEST,
      dir,
      backup: text,
      secret: recoveryKey!,
      protection: { kind: "passphrase", passphrase: PASS },
      mastodonToken: "token",
      services: { directory: fake.url, delivery: fake.url },
      keyPackages: 1,
      publishIdentity: false,
    });
    expect(restored.acct).toBe("alice@a.test");
    expect(restored.holdsAccountKey).toBe(true);
    expect(restored.deviceId).not.toBe(alice.deviceId);
    const [before, after] = await Promise.all(
      [alice.dir, dir].map(async (d) =>
        (await DeviceStore.open(d, { ...TEST, passphrase: PASS })).readDevice(),
      ),
    );
    expect(after!.accountKey).toEqual(before!.accountKey);
    expect(after!.deviceKey).not.toEqual(before!.deviceKey);
    expect(restored.groups()).toEqual([]);
  });
});

describe("a directory whose owner opted out of encryption", () => {
  it("is plain JSON readable by the owner only, and says so in store-key.json", async () => {
    const alice = await device("none");
    expect(alice.protection).toBe("none");
    expect(JSON.parse(await readFile(join(alice.dir, "store-key.json"), "utf8"))).toEqual({
      format: "mls-dm.store-key",
      v: 2,
      protection: "none",
    });
    const dev = JSON.parse(await readFile(join(alice.dir, "device.json"), "utf8")) as Record<string, unknown>;
    expect(dev).toMatchObject({
      format: "mls-dm.device",
      v: 2,
      acct: "alice@a.test",
      mastodonToken: "token-SECRET-0123456789",
    });
    for (const path of (await allFiles(alice.dir)).keys())
      expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await reopen(alice, null)).acct).toBe("alice@a.test");
  });
});

describe("format 1 (the first release, unencrypted)", () => {
  /** Rewrites a format-2 plain directory as the first release wrote it. */
  async function downgrade(dir: string, groupId: string): Promise<void> {
    for (const [path, bytes] of await allFiles(dir)) {
      const name = path.slice(dir.length + 1);
      if (name === "store-key.json" || name === "generation" || /\/(base-[^/]+|members)\.json$/.test(name)) {
        // (state bases and members.json are folded back into group.json below: the first release kept
        // all of it there)
        if (!name.includes("/base-") && !name.endsWith("/members.json")) await rm(path);
      } else if (name.endsWith("history.jsonl")) {
        const lines = bytes
          .toString("utf8")
          .split("\n")
          .filter((l) => l !== "");
        await writeFile(
          path,
          lines.map((l) => `\n${JSON.stringify((JSON.parse(l) as { entry: unknown }).entry)}`).join(""),
        );
      } else if (name.endsWith(".json")) {
        const rec = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
        if (name.endsWith("group.json")) {
          rec.format = "mls-dm.group";
          const membersPath = join(path, "..", "members.json");
          const members = JSON.parse(await readFile(membersPath, "utf8")) as { leaves: unknown };
          rec.leaves = members.leaves;
          await rm(membersPath);
          delete rec.ownLeafUpdatedAt;
          delete rec.leaving;
          if (typeof rec.stateBase === "string") {
            const basePath = join(path, "..", `base-${rec.stateBase}.json`);
            const base = JSON.parse(await readFile(basePath, "utf8")) as { state: string };
            rec.state = encodeState(
              decodeStateDelta(
                rec.state as string,
                decodeState(base.state),
                rec.secretNodes as [number, string][] | undefined,
              ),
            );
            delete rec.stateBase;
            delete rec.secretNodes;
            await rm(basePath);
          }
        }
        await writeFile(path, JSON.stringify({ ...rec, v: 1 }));
      }
    }
    expect(await DeviceStore.inspect(dir)).toEqual({ kind: "legacy" });
    void groupId;
  }

  it("is refused with a clear message, and `migrate` encrypts it in place, keeping groups and history", async () => {
    const alice = await device("none");
    const { groupId } = await alice.createGroup();
    await alice.send(groupId, "from the first release");
    const epochAuth = alice.epochAuthenticator(groupId);
    await downgrade(alice.dir, groupId);
    const refused = await reopen(alice, null).catch((e: unknown) => e);
    expect(codeOf(refused)).toBe("needs_migration");
    expect((refused as Error).message).toMatch(/mls-dm migrate/);

    await MlsDmClient.migrate(alice.dir, { kind: "passphrase", passphrase: PASS }, TEST);
    const files = await allFiles(alice.dir);
    for (const [path, bytes] of files) {
      expect(bytes.toString("utf8").includes("from the first release"), path).toBe(false);
      expect(path.endsWith(".migrate"), path).toBe(false);
    }
    const migrated = await reopen(alice);
    expect(migrated.epochAuthenticator(groupId)).toBe(epochAuth);
    expect(
      (await migrated.history(groupId)).map((h) => h.content.kind === "activity" && h.content.activity.type),
    ).toEqual(["Create"]);
    expect((await migrated.send(groupId, "after the migration")).epoch).toBe(0);
  });

  it("an interrupted migration is finished by the next open (after store-key.json) or can be run again (before)", async () => {
    const alice = await device("none");
    const { groupId } = await alice.createGroup();
    await downgrade(alice.dir, groupId);
    // Before the switch-over: stale .migrate files beside a format-1 directory are swept by `migrate`.
    await writeFile(join(alice.dir, "device.json.migrate"), "garbage from an interrupted run");
    await MlsDmClient.migrate(alice.dir, { kind: "none" }, TEST);
    // After the switch-over: put a converted file back under its .migrate name, as a crash would leave it.
    const groupFile = join(alice.dir, "groups", groupId, "group.json");
    await rename(groupFile, `${groupFile}.migrate`);
    await writeFile(groupFile, '{"format":"mls-dm.group","v":1}');
    const reopened = await reopen(alice, null);
    expect(reopened.groups().map((g) => g.groupId)).toEqual([groupId]);
    expect((await allFiles(alice.dir)).has(`${groupFile}.migrate`)).toBe(false);
  });
});
