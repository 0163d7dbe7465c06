import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import type { KdfPolicy } from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import {
  listDir,
  readFileIfExists,
  removeFileDurably,
  writeFileAtomic,
  writeMarkerSync,
  type AtomicWriteHooks,
} from "./atomicFile.js";
import { STORE_KEY_FILE, rewrapStoreKey, type StoreCipher, type StoreProtection } from "./cipher.js";
import {
  DeviceStore,
  GENERATION_FILE,
  MIGRATION_SUFFIX,
  finishMigration,
  unlockDirectory,
} from "./deviceStore.js";
import { DEFAULT_LOCK_TIMEOUT_MS, LOCK_FILE, acquireDeviceLock } from "./lock.js";
import { FORMAT_VERSION, parseHead } from "./records.js";

// Changing how a device directory is protected: a new passphrase, or a switch between a passphrase and
// none.
//
// A new passphrase for a passphrase-protected directory is one file: store-key.json wraps the same data
// key under the new passphrase (fresh salt and nonce, today's KDF parameters), written atomically. Every
// other file stays byte for byte what it was, a crash leaves the old or the new store-key.json, and a
// process that has the directory open keeps working (its data key is still the one).
//
// Switching between "none" and a passphrase changes every file (plain ↔ sealed), so it is done the way
// a format-1 migration is (migrate.ts), with store-key.json as the switch-over:
//   1. under the directory's lock, a switch-over an earlier run reached is finished, and `.migrate`
//      files it left before reaching one are swept;
//   2. every file is rewritten into `<file>.migrate` the new way;
//   3. store-key.json is replaced: from here on the directory is protected the new way;
//   4. each `<file>.migrate` replaces `<file>` (finishMigration, which every open also runs).
// Supported rather than refused because the existing pieces already give the two guarantees it needs.
// (a) A crash leaves a directory that opens with exactly one of the two secrets: before 3 the old
//     store-key.json and the old files, after it the new one and the new files once finishMigration ran.
//     finishMigration only renames a `.migrate` file written the way store-key.json says (plain vs
//     sealed is visible without a key, and a switch always changes it), so neither an open after a crash
//     before 3 nor an open by another process while 2 is under way (opens do not take the lock) puts a
//     file the current key cannot read in place of a good one.
// (b) A process that had the directory open with the old cipher writes nothing afterwards: every
//     operation takes the lock, sees the generation this change bumps and re-reads device.json first,
//     which no longer opens with the old cipher (a StoreFormatError, nothing written). It has to be
//     started again — the price of a switch, which is rare; a new passphrase costs nothing of the sort.
// What it cannot do: leftovers of a switch that crashed before 3 stay until the next change sweeps them
// (opens must not delete them, see (a)); for a passphrase → none switch those are plain copies of the
// files, which is what the owner was asking for anyway.

export interface ChangeProtectionOptions extends KdfPolicy {
  /** Argon2id progress, 0…1: unlocking with the old passphrase, then deriving from the new one. */
  onProgress?: (fraction: number) => void;
  /** How long to wait for another process working on the directory. Default 60 s. */
  lockTimeoutMs?: number;
  /** Test seam for crash simulation: every file this change writes goes through these hooks. */
  hooks?: AtomicWriteHooks;
}

export interface ProtectionChange {
  from: "passphrase" | "none";
  to: "passphrase" | "none";
  /** Files rewritten besides store-key.json (0 for a new passphrase). */
  resealed: number;
}

/**
 * Checks the passphrase of a directory (Argon2id) without changing anything: `wrong_passphrase` or
 * `passphrase_required` as `DeviceStore.open` would throw them. For asking a new passphrase only once the
 * old one is known to be right.
 */
export async function checkStorePassphrase(
  dir: string,
  opts: KdfPolicy & { passphrase?: string; onProgress?: (fraction: number) => void },
): Promise<void> {
  await unlock(dir, opts);
}

/**
 * Protects the device directory `dir` as `protection` says from now on, unlocking it with
 * `current.passphrase` first (a wrong one throws `wrong_passphrase` and changes nothing). See above for
 * what is rewritten and why a crash at any point leaves a directory that opens with the old or the new
 * secret.
 */
export async function changeStoreProtection(
  dir: string,
  current: { passphrase?: string },
  protection: StoreProtection,
  opts: ChangeProtectionOptions = {},
): Promise<ProtectionChange> {
  const { onProgress, hooks = {} } = opts;
  const policy: KdfPolicy = opts.insecureTestKdf === true ? { insecureTestKdf: true } : {};
  const { cipher, text, from } = await unlock(dir, {
    ...policy,
    ...(current.passphrase === undefined ? {} : { passphrase: current.passphrase }),
    ...(onProgress === undefined ? {} : { onProgress: (f: number) => onProgress(f / 2) }),
  });
  if (from === "none" && protection.kind === "none") {
    throw new ClientError("bad_input", `${dir} is not protected by a passphrase; there is none to remove`);
  }
  const keyPath = join(dir, STORE_KEY_FILE);
  const lock = await acquireDeviceLock(dir, { timeoutMs: opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS });
  try {
    // Unlocked before taking the lock (Argon2id takes a while, and a wrong passphrase must not even
    // create the lock file): make sure nobody replaced store-key.json meanwhile.
    if ((await readFileIfExists(keyPath))?.toString("utf8") !== text) {
      throw new ClientError(
        "device_busy",
        `${keyPath} changed while it was being unlocked (another mls-dm process?); try again`,
      );
    }
    const next = await rewrapStoreKey(
      cipher,
      protection,
      policy,
      onProgress === undefined ? undefined : (f) => onProgress(0.5 + f / 2),
    );
    if (next.cipher === cipher) {
      await writeFileAtomic(keyPath, next.text, hooks);
      onProgress?.(1);
      return { from, to: "passphrase", resealed: 0 };
    }
    const resealed = await switchProtection(dir, cipher, next, hooks);
    onProgress?.(1);
    return { from, to: protection.kind, resealed };
  } finally {
    await lock.release();
  }
}

async function unlock(
  dir: string,
  opts: KdfPolicy & { passphrase?: string; onProgress?: (fraction: number) => void },
): Promise<{ cipher: StoreCipher; text: string; from: "passphrase" | "none" }> {
  const state = await DeviceStore.inspect(dir);
  if (state.kind !== "store") {
    await DeviceStore.open(dir, opts); // throws the error opening it would (no device, needs migration)
    throw new ClientError("no_device", `${dir} is not a device directory`);
  }
  const { cipher, text } = await unlockDirectory(dir, opts);
  return { cipher, text, from: cipher.protection };
}

/** Steps 1–4 above, under the lock. Returns how many files were rewritten. */
async function switchProtection(
  dir: string,
  from: StoreCipher,
  to: { text: string; cipher: StoreCipher },
  hooks: AtomicWriteHooks,
): Promise<number> {
  await finishMigration(dir);
  await sweepMigrationFiles(dir);
  let committed = false;
  try {
    const files = await storeFiles(dir);
    for (const path of files) {
      const rel = relative(dir, path).split(sep).join("/");
      const text = (await readFileIfExists(path))?.toString("utf8");
      if (text === undefined) continue;
      const out = path.endsWith(".jsonl")
        ? resealLines(path, rel, text, from, to.cipher)
        : resealRecord(path, rel, text, from, to.cipher);
      await writeFileAtomic(`${path}${MIGRATION_SUFFIX}`, out, hooks);
    }
    await writeFileAtomic(join(dir, STORE_KEY_FILE), to.text, hooks);
    committed = true;
    await finishMigration(dir);
    // Processes that had the directory open re-read it at their next operation, and stop there: their
    // cipher no longer opens device.json (see (b) above). Not durable: after a crash every process reads anew.
    writeMarkerSync(join(dir, GENERATION_FILE), randomBytes(12).toString("hex"));
    return files.length;
  } catch (e) {
    // A failure (not a crash) before the switch-over: leave no half-written copies behind, least of all
    // plain ones of a directory that stays encrypted. After it, the next open finishes the job.
    if (!committed) await sweepMigrationFiles(dir).catch(() => undefined);
    throw e;
  }
}

/** The directories finishMigration looks in: the files a switch rewrites must be among those it renames. */
async function storeDirs(dir: string): Promise<string[]> {
  const groups = join(dir, "groups");
  return [dir, join(dir, "keypackages"), ...(await listDir(groups)).map((g) => join(groups, g))];
}

/** Every `.migrate` file left by a switch that did not reach its switch-over (run after finishMigration). */
async function sweepMigrationFiles(dir: string): Promise<void> {
  for (const d of await storeDirs(dir)) {
    for (const name of await listDir(d)) {
      if (name.endsWith(MIGRATION_SUFFIX)) await removeFileDurably(join(d, name));
    }
  }
}

/** The files sealed under the data key (or plain by choice): every file but store-key.json, lock, generation. */
async function storeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await storeDirs(dir)) {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (e) {
      if ((e as { code?: unknown }).code === "ENOENT") continue;
      throw e;
    }
    const names = new Set(await listDir(d)); // without temporary files
    for (const entry of entries) {
      const name = entry.name;
      if (!entry.isFile() || !names.has(name)) continue;
      if (d === dir && [STORE_KEY_FILE, LOCK_FILE, GENERATION_FILE].includes(name)) continue;
      if (name.endsWith(".json") || name.endsWith(".jsonl")) out.push(join(d, name));
    }
  }
  return out.sort();
}

function resealRecord(path: string, rel: string, text: string, from: StoreCipher, to: StoreCipher): string {
  const head = parseHead(path, undefined, text, FORMAT_VERSION);
  const body = from.decodeRecord(path, rel, head.format, head);
  return to.encodeRecord(head.format, rel, body as object);
}

/** An append-only file (history): each complete line re-sealed; a torn last line is dropped, as reading would. */
function resealLines(path: string, rel: string, text: string, from: StoreCipher, to: StoreCipher): string {
  const out: string[] = [];
  for (const [i, line] of text.split("\n").entries()) {
    if (line === "") continue;
    const entry = from.decodeLine(path, rel, line, i + 1);
    if (entry === undefined || entry === null || typeof entry !== "object") continue;
    out.push(`\n${to.encodeLine(rel, entry)}`);
  }
  return out.join("");
}
