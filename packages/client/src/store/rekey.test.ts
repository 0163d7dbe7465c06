import { chmod, cp, mkdtemp, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "../client.js";
import { kdfParamsFor } from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import { allFiles, snapshot } from "../testSupport/dirSnapshot.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import type { AtomicWriteHooks } from "./atomicFile.js";
import type { StoreProtection } from "./cipher.js";
import { DeviceStore } from "./deviceStore.js";
import { acquireDeviceLock } from "./lock.js";
import { changeStoreProtection } from "./rekey.js";

// Changing how a device directory is protected (rekey.ts): a new passphrase rewrites store-key.json only;
// switching between a passphrase and none rewrites every file, with store-key.json as the switch-over.
// Real files in temporary directories, the cheap test Argon2id parameters; crashes are simulated by
// copying the directory at the instant before each rename (the atomicFile hooks).

const TEST = { insecureTestKdf: true } as const;
const OLD = "the old passphrase";
const NEW = "the new passphrase";
const TOKEN = "token-SECRET-0123456789";
const NO_WAIT = { attempts: 3, baseDelayMs: 0, maxDelayMs: 0 };
const PASSPHRASE = (passphrase: string): StoreProtection => ({ kind: "passphrase", passphrase });
const NONE: StoreProtection = { kind: "none" };

let fake: FakeServices;
beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
});
afterEach(() => fake.stop());

/** A device with a group and two messages (state base, group record, history), protected as asked. */
async function device(passphrase: string | null): Promise<{ alice: MlsDmClient; groupId: string }> {
  const alice = await MlsDmClient.create({
    ...TEST,
    dir: join(await mkdtemp(join(tmpdir(), "mls-dm-rekey-")), "alice"),
    acct: "alice@a.test",
    mastodonToken: TOKEN,
    services: { directory: fake.url, delivery: fake.url },
    protection: passphrase === null ? NONE : PASSPHRASE(passphrase),
    keyPackages: 2,
    publishIdentity: false,
    retry: NO_WAIT,
  });
  const { groupId } = await alice.createGroup();
  await alice.send(groupId, "the secret plan is at noon");
  await alice.send(groupId, "bring snacks");
  return { alice, groupId };
}

/** `null`: no passphrase given. */
const open = (dir: string, passphrase: string | null) =>
  MlsDmClient.open(dir, { ...TEST, ...(passphrase === null ? {} : { passphrase }), retry: NO_WAIT });

const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );
const codeOf = (e: unknown) => (e instanceof ClientError ? e.code : undefined);

/** What a person sees of the device: its group, epoch authenticator and messages. */
async function view(client: MlsDmClient, groupId: string): Promise<unknown> {
  return {
    acct: client.acct,
    groups: client.groups().map((g) => g.groupId),
    epochAuthenticator: client.epochAuthenticator(groupId),
    history: (await client.history(groupId)).map((h) => ({ seq: h.seq, content: h.content })),
  };
}

/** Relative path → bytes. */
async function files(dir: string): Promise<Map<string, Buffer>> {
  return new Map([...(await allFiles(dir))].map(([p, b]) => [p.slice(dir.length + 1), b]));
}

/**
 * Hooks that copy the whole directory at the instant before each rename, as a crash (or power loss)
 * there would leave it; the lock the dead process held is gone in the copy, as a restart would break it.
 */
function crashCopies(dir: string): { hooks: AtomicWriteHooks; copies: string[] } {
  const copies: string[] = [];
  return {
    copies,
    hooks: {
      beforeRename: async () => {
        const copy = join(await mkdtemp(join(tmpdir(), "mls-dm-crash-")), "alice");
        await cp(dir, copy, { recursive: true });
        await chmod(copy, 0o700);
        await rm(join(copy, "lock"), { force: true });
        copies.push(copy);
      },
    },
  };
}

async function migrateFiles(dir: string): Promise<string[]> {
  return [...(await files(dir)).keys()].filter((p) => p.endsWith(".migrate"));
}

describe("a new passphrase", () => {
  it("opens the directory, the old one no longer does, and every other file is byte for byte the same", async () => {
    const { alice, groupId } = await device(OLD);
    const seen = await view(alice, groupId);
    const before = await files(alice.dir);
    const oldKey = JSON.parse(before.get("store-key.json")!.toString("utf8")) as Record<string, unknown>;
    const wrongAtOpen = await failure(open(alice.dir, "not the passphrase"));

    const change = await MlsDmClient.changePassphrase(alice.dir, { passphrase: OLD }, PASSPHRASE(NEW), TEST);
    expect(change).toEqual({ from: "passphrase", to: "passphrase", resealed: 0 });

    const after = await files(alice.dir);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [path, bytes] of before) {
      if (path !== "store-key.json") expect(after.get(path)!.equals(bytes), path).toBe(true);
    }
    const newKey = JSON.parse(after.get("store-key.json")!.toString("utf8")) as {
      kdf: Record<string, unknown>;
      nonce: string;
      wrappedKey: string;
    };
    expect(newKey.kdf).toMatchObject({ alg: "argon2id", version: 0x13, ...kdfParamsFor(TEST) });
    expect(newKey.kdf.salt).not.toBe((oldKey.kdf as { salt: string }).salt);
    expect(newKey.nonce).not.toBe(oldKey.nonce);

    // The old passphrase: the very error opening with a wrong one gives.
    const wrong = await failure(open(alice.dir, OLD));
    expect(codeOf(wrong)).toBe("wrong_passphrase");
    expect((wrong as Error).message).toBe((wrongAtOpen as Error).message);
    const reopened = await open(alice.dir, NEW);
    expect(await view(reopened, groupId)).toEqual(seen);
    await reopened.send(groupId, "after the change");
    // Same data key: a client that had the directory open before goes on.
    await alice.send(groupId, "from the client opened before");
    expect((await alice.history(groupId)).length).toBe(4);
  });

  it("with a wrong current passphrase fails as opening does and changes nothing, not even a lock file", async () => {
    const { alice } = await device(OLD);
    const wrongAtOpen = await failure(open(alice.dir, "not the passphrase"));
    const before = await snapshot(alice.dir);
    const wrong = await failure(
      MlsDmClient.changePassphrase(alice.dir, { passphrase: "not the passphrase" }, PASSPHRASE(NEW), TEST),
    );
    expect(codeOf(wrong)).toBe("wrong_passphrase");
    expect((wrong as Error).message).toBe((wrongAtOpen as Error).message);
    const missing = await failure(MlsDmClient.changePassphrase(alice.dir, {}, NONE, TEST));
    expect(codeOf(missing)).toBe("passphrase_required");
    expect(await snapshot(alice.dir)).toEqual(before);
    expect((await open(alice.dir, OLD)).acct).toBe("alice@a.test");
  });

  it("interrupted at any point leaves a directory that opens with the old or the new passphrase", async () => {
    const { alice, groupId } = await device(OLD);
    const seen = await view(alice, groupId);
    const { hooks, copies } = crashCopies(alice.dir);
    await changeStoreProtection(alice.dir, { passphrase: OLD }, PASSPHRASE(NEW), { ...TEST, hooks });
    // One write (store-key.json); a crash before its rename leaves the old one and a temporary file.
    expect(copies).toHaveLength(1);
    expect(await view(await open(copies[0]!, OLD), groupId)).toEqual(seen);
    expect(codeOf(await failure(open(copies[0]!, NEW)))).toBe("wrong_passphrase");
    expect((await readdir(copies[0]!)).filter((n) => n.includes(".tmp-"))).toEqual([]);
    // After it: the new one.
    expect(await view(await open(alice.dir, NEW), groupId)).toEqual(seen);

    // A failure at that point (disk full, …): the old passphrase still opens it, nothing else moved.
    const before = await files(alice.dir);
    const failing: AtomicWriteHooks = {
      beforeRename: () => {
        throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
      },
    };
    await expect(
      changeStoreProtection(alice.dir, { passphrase: NEW }, PASSPHRASE(OLD), { ...TEST, hooks: failing }),
    ).rejects.toThrow(/ENOSPC/);
    expect(await view(await open(alice.dir, NEW), groupId)).toEqual(seen);
    expect(await files(alice.dir)).toEqual(before);
  });

  it("waits for the directory's lock, and then refuses if store-key.json changed meanwhile", async () => {
    const { alice, groupId } = await device(OLD);
    const before = await files(alice.dir);
    // Another process inside an operation: the change waits for it (here: in vain), changing nothing.
    const held = await acquireDeviceLock(alice.dir, { timeoutMs: 1000 });
    const busy = await failure(
      MlsDmClient.changePassphrase(alice.dir, { passphrase: OLD }, PASSPHRASE(NEW), {
        ...TEST,
        lockTimeoutMs: 200,
      }),
    );
    expect(codeOf(busy)).toBe("device_busy");
    const during = await files(alice.dir);
    during.delete("lock"); // the other process's
    expect(during).toEqual(before);

    // A change unlocked with the old passphrase and waits; meanwhile the other process changes the
    // passphrase (its store-key.json made on a copy: same data key, another passphrase).
    let unlocked!: () => void;
    const isUnlocked = new Promise<void>((resolve) => (unlocked = resolve));
    const waiting = failure(
      changeStoreProtection(alice.dir, { passphrase: OLD }, PASSPHRASE("a third passphrase"), {
        ...TEST,
        onProgress: (f) => {
          if (f >= 0.5) unlocked();
        },
      }),
    );
    await isUnlocked;
    const other = join(await mkdtemp(join(tmpdir(), "mls-dm-other-")), "alice");
    await cp(alice.dir, other, { recursive: true });
    await rm(join(other, "lock"));
    await changeStoreProtection(other, { passphrase: OLD }, PASSPHRASE(NEW), TEST);
    await writeFile(join(alice.dir, "store-key.json"), await readFile(join(other, "store-key.json")));
    await held.release();
    const raced = await waiting;
    expect(codeOf(raced)).toBe("device_busy");
    expect((raced as Error).message).toMatch(/store-key.json changed while it was being unlocked/);
    expect(await view(await open(alice.dir, NEW), groupId)).toMatchObject({ acct: "alice@a.test" });
    expect(codeOf(await failure(open(alice.dir, "a third passphrase")))).toBe("wrong_passphrase");
  });
});

describe("switching between a passphrase and none", () => {
  it("a process holding the old key writes nothing after a switch, even when the generation marker was lost", async () => {
    for (const [from, to] of [
      [null, PASSPHRASE(NEW)],
      [OLD, NONE],
    ] as const) {
      const { alice, groupId } = await device(from);
      const generation = await readFile(join(alice.dir, "generation"));
      await MlsDmClient.changePassphrase(alice.dir, from === null ? {} : { passphrase: from }, to, TEST);
      // The marker is not durable: a crash right after the switch can lose it.
      await writeFile(join(alice.dir, "generation"), generation);
      const before = await files(alice.dir);
      const stale = await failure(alice.send(groupId, "with the old key"));
      expect(codeOf(stale), `${String(from)} → ${to.kind}`).toBe("directory_changed");
      expect(await files(alice.dir)).toEqual(before);
    }
    // A new passphrase for the same data key is no reason to stop.
    const { alice, groupId } = await device(OLD);
    await MlsDmClient.changePassphrase(alice.dir, { passphrase: OLD }, PASSPHRASE(NEW), TEST);
    await alice.send(groupId, "the data key is the same");
    await alice.send(groupId, "and again");
    expect((await (await open(alice.dir, NEW)).history(groupId)).length).toBeGreaterThanOrEqual(2);
  });

  it("none → passphrase seals every file, → none makes them plain again; groups and history stay", async () => {
    const { alice, groupId } = await device(null);
    const seen = await view(alice, groupId);

    const sealed = await MlsDmClient.changePassphrase(alice.dir, {}, PASSPHRASE(NEW), TEST);
    expect(sealed.from).toBe("none");
    expect(sealed.to).toBe("passphrase");
    expect(sealed.resealed).toBeGreaterThanOrEqual(6); // device, cursors, pins, 2 KeyPackages, group files
    const now = await files(alice.dir);
    expect(await migrateFiles(alice.dir)).toEqual([]);
    for (const [path, bytes] of now) {
      for (const secret of [TOKEN, "the secret plan", "alice@a.test"])
        expect(bytes.toString("utf8").includes(secret), `${secret} in ${path}`).toBe(false);
    }
    expect(codeOf(await failure(open(alice.dir, null)))).toBe("passphrase_required");
    const reopened = await open(alice.dir, NEW);
    expect(reopened.protection).toBe("passphrase");
    expect(await view(reopened, groupId)).toEqual(seen);

    // The client opened before the switch stops at its next operation, writing nothing.
    const stale = await failure(alice.send(groupId, "from the client opened before"));
    expect(codeOf(stale)).toBe("directory_changed");
    expect((stale as Error).message).toMatch(/changed how .* is protected .*open it again/);
    expect(await files(alice.dir)).toEqual(now);

    await reopened.send(groupId, "encrypted now");
    const seenAgain = await view(reopened, groupId);
    const plain = await MlsDmClient.changePassphrase(alice.dir, { passphrase: NEW }, NONE, TEST);
    expect(plain).toMatchObject({ from: "passphrase", to: "none" });
    expect(await migrateFiles(alice.dir)).toEqual([]);
    expect((await readFile(join(alice.dir, "device.json"), "utf8")).includes(TOKEN)).toBe(true);
    expect(JSON.parse(await readFile(join(alice.dir, "store-key.json"), "utf8"))).toEqual({
      format: "mls-dm.store-key",
      v: 2,
      protection: "none",
    });
    const unprotected = await open(alice.dir, null);
    expect(unprotected.protection).toBe("none");
    expect(await view(unprotected, groupId)).toEqual(seenAgain);
    await unprotected.send(groupId, "plain again");
  });

  it("refuses none → none, changing nothing", async () => {
    const { alice } = await device(null);
    const before = await snapshot(alice.dir);
    const refused = await failure(MlsDmClient.changePassphrase(alice.dir, {}, NONE, TEST));
    expect(codeOf(refused)).toBe("bad_input");
    expect(await snapshot(alice.dir)).toEqual(before);
  });

  for (const [from, to] of [
    [null, NEW],
    [OLD, null],
  ] as const) {
    const name = `${from === null ? "none" : "passphrase"} → ${to === null ? "none" : "passphrase"}`;
    it(`${name}: a crash at any point leaves a directory that opens with the old protection or the new one, never neither`, async () => {
      const { alice, groupId } = await device(from);
      const seen = await view(alice, groupId);
      const original = await files(alice.dir);
      const { hooks, copies } = crashCopies(alice.dir);
      const current = from === null ? {} : { passphrase: from };
      const change = await changeStoreProtection(alice.dir, current, to === null ? NONE : PASSPHRASE(to), {
        ...TEST,
        hooks,
      });
      // One write per file into `<file>.migrate`, then store-key.json.
      expect(copies).toHaveLength(change.resealed + 1);

      // Kept aside before anything opens the copies (opening sweeps temporary files): see below.
      const last = join(await mkdtemp(join(tmpdir(), "mls-dm-crash-")), "alice");
      await cp(copies.at(-1)!, last, { recursive: true });
      await chmod(last, 0o700);

      // Before the switch-over: the old protection opens it, with everything in it; the new one does not.
      // While another process holds the lock (a change under way), opening leaves the other way's
      // `.migrate` files alone; with the lock free (the change died), opening deletes them — after a
      // change to "none" they are plain copies of every secret.
      for (const [i, copy] of copies.entries()) {
        const leftovers = await migrateFiles(copy);
        expect(leftovers.length, `copy ${i}`).toBe(i);
        const busy = await acquireDeviceLock(copy, { timeoutMs: 0 });
        await DeviceStore.open(copy, { ...TEST, ...(from === null ? {} : { passphrase: from }) });
        expect(await migrateFiles(copy), `copy ${i}`).toEqual(leftovers);
        await busy.release();
        expect(await view(await open(copy, from), groupId), `copy ${i}`).toEqual(seen);
        if (from === null) expect((await open(copy, to)).protection, `copy ${i}`).toBe("none");
        else expect(codeOf(await failure(open(copy, null))), `copy ${i}`).toBe("passphrase_required");
        expect(await migrateFiles(copy), `copy ${i}`).toEqual([]);
        for (const [path, bytes] of await files(copy)) {
          if (original.has(path) && path !== "generation")
            expect(bytes.equals(original.get(path)!), path).toBe(true);
        }
      }
      // Running the change again on such a directory completes it.
      const retried = copies[Math.floor(copies.length / 2)]!;
      await changeStoreProtection(retried, current, to === null ? NONE : PASSPHRASE(to), TEST);
      expect(await migrateFiles(retried)).toEqual([]);
      expect(await view(await open(retried, to), groupId)).toEqual(seen);
      if (to !== null) expect(codeOf(await failure(open(retried, from)))).toBe("passphrase_required");

      // After the switch-over (store-key.json renamed, some `.migrate` files renamed, some not): the new
      // protection opens it and the open finishes the renames.
      const temp = (await readdir(last)).find((n) => n.startsWith("store-key.json.tmp-"))!;
      await rename(join(last, temp), join(last, "store-key.json"));
      const pending = await migrateFiles(last);
      for (const p of pending.slice(0, Math.floor(pending.length / 2))) {
        await rename(join(last, p), join(last, p.slice(0, -".migrate".length)));
      }
      if (to !== null) expect(codeOf(await failure(open(last, null)))).toBe("passphrase_required");
      expect(await view(await open(last, to), groupId)).toEqual(seen);
      expect(await migrateFiles(last)).toEqual([]);
      // And the live directory itself, of course.
      expect(await view(await open(alice.dir, to), groupId)).toEqual(seen);
    });
  }

  it("a failure before the switch-over leaves no copies behind and the directory as it was", async () => {
    const { alice, groupId } = await device(OLD);
    const seen = await view(alice, groupId);
    const before = await files(alice.dir);
    let writes = 0;
    const failing: AtomicWriteHooks = {
      beforeRename: () => {
        if (++writes === 3) throw Object.assign(new Error("EIO: i/o error"), { code: "EIO" });
      },
    };
    await expect(
      changeStoreProtection(alice.dir, { passphrase: OLD }, NONE, { ...TEST, hooks: failing }),
    ).rejects.toThrow(/EIO/);
    const after = await files(alice.dir);
    expect([...after.keys()].filter((p) => !p.includes(".tmp-")).sort()).toEqual([...before.keys()].sort());
    for (const [path, bytes] of before) expect(after.get(path)!.equals(bytes), path).toBe(true);
    expect(await view(await open(alice.dir, OLD), groupId)).toEqual(seen);
  });
});
