import { randomBytes } from "node:crypto";
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { mkdir, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

// Every file of a device directory is written here. Secrets live in these files (encryption under a
// passphrase is a later issue), so files are 0600 and directories 0700 from the moment they exist.

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;
const TEMP_MARK = ".tmp-";

/** Test seam: lets a test simulate a crash between writing the temporary file and renaming it. */
export interface AtomicWriteHooks {
  beforeRename?: (tempPath: string) => void | Promise<void>;
}

export async function ensureDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: DIR_MODE });
}

/**
 * Runs a write of files in `dir` (whose first system call fails with ENOENT when `dir` is missing), and
 * makes the directory (durably) only then: a group's directory nearly always exists, and a mkdir before
 * every write is a round trip through the thread pool on the path of every message.
 */
export async function intoDir<T>(dir: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  await ensureDir(dir);
  // The new directory's entry in its parent must survive a power loss like the files written into it.
  await fsyncDir(dirname(dir));
  return write();
}

/**
 * Replaces `path` with `data` so that a crash leaves either the old or the new content, never a mix:
 * write a temporary file in the same directory, fsync it, rename it over the target, fsync the directory
 * (so the rename itself survives a power loss).
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  hooks: AtomicWriteHooks = {},
): Promise<void> {
  await installFile(await stageFile(path, data), path, hooks);
}

/**
 * Several files, each replaced atomically as by writeFileAtomic and each durable before the next one's
 * rename (a later file may name an earlier one: a pending commit names its state's base snapshot). Only
 * the writing and fsyncing of the temporary files run side by side: the thread pool overlaps their
 * fsyncs, while the renames keep their order whatever the file system does with unsynced renames.
 */
export async function writeFilesAtomicInOrder(
  files: readonly { path: string; data: Uint8Array | string }[],
  hooks: AtomicWriteHooks = {},
): Promise<void> {
  const staged = await Promise.allSettled(files.map((f) => stageFile(f.path, f.data)));
  const failed = staged.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed !== undefined) {
    // Nothing was renamed: the others' temporary files go too (removeStaleTempFiles would, at next open).
    const written = staged.filter((s): s is PromiseFulfilledResult<string> => s.status === "fulfilled");
    await Promise.all(written.map((s) => rm(s.value, { force: true })));
    throw failed.reason;
  }
  for (const [i, s] of staged.entries()) {
    await installFile((s as PromiseFulfilledResult<string>).value, files[i]!.path, hooks);
  }
}

/** The temporary file beside `path` holding `data`, fsynced; returns its path. */
async function stageFile(path: string, data: Uint8Array | string): Promise<string> {
  const temp = tempPathFor(path);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temp;
}

async function installFile(temp: string, path: string, hooks: AtomicWriteHooks): Promise<void> {
  await hooks.beforeRename?.(temp);
  await rename(temp, path);
  await fsyncDir(dirname(path));
}

/**
 * A marker of a few bytes, overwritten in place with synchronous calls and not durably (no fsync: a crash
 * may lose it). Only for a file read and written under the directory's lock (store/lock.ts), so no reader
 * sees a write half done. Not a temporary file and a rename: on ext4 a rename over an existing file (and a
 * truncation to zero) makes the kernel flush the new file's data first (auto_da_alloc), 0.5 ms on the path
 * of every operation here against 0.02 ms for this (measured on the benchmark's VM, 2026-11-28).
 */
export function writeMarkerSync(path: string, text: string): void {
  const bytes = Buffer.from(text, "utf8");
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT, FILE_MODE);
  try {
    writeSync(fd, bytes, 0, bytes.length, 0);
    // Cuts a longer earlier content; a no-op when the length is the same, as it always is for a token.
    ftruncateSync(fd, bytes.length);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates `path` with `text` on this thread (owner only); throws EEXIST when it exists already, which is
 * what the directory's lock file relies on (store/lock.ts). Not durable (no fsync).
 */
export function createFileSync(path: string, text: string): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/**
 * Appends `text` to the file at `path` on this thread, not durably (no fsync); false, and nothing
 * written, when the file does not exist. For small appends whose durability the caller sees to.
 */
export function appendSync(path: string, text: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_APPEND);
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
  try {
    const bytes = Buffer.from(text, "utf8");
    for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at, bytes.length - at);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** A temporary file beside `path`, for writing before the rename (removeStaleTempFiles knows the mark). */
function tempPathFor(path: string): string {
  return join(dirname(path), `${basename(path)}${TEMP_MARK}${randomBytes(6).toString("hex")}`);
}

/** A small file read on this thread (see writeMarkerSync); undefined when it does not exist. */
export function readSmallFileSync(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Deletes a file without waiting for the deletion to be durable (no fsync of the directory); a missing
 * file is fine. Only for files whose return after a crash is harmless: a file nothing names any more
 * (deleted again later), or one whose reader checks it is stale (a pending commit from an epoch the group
 * has left, commitPipeline.ts). The next durable write in the directory makes the deletion durable too.
 */
export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
}

/** Deletes a file and makes the deletion durable; a missing file is fine. */
export async function removeFileDurably(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncDir(dirname(path));
}

export async function readFileIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

export async function listDir(path: string): Promise<string[]> {
  try {
    return (await readdir(path)).filter((name) => !name.includes(TEMP_MARK));
  } catch (e) {
    if (isNotFound(e)) return [];
    throw e;
  }
}

/** Temporary files left by a crash before their rename hold nothing the directory needs. */
export async function removeStaleTempFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (isNotFound(e)) return;
    throw e;
  }
  await Promise.all(names.filter((n) => n.includes(TEMP_MARK)).map((n) => rm(join(dir, n), { force: true })));
}

export function isNotFound(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === "ENOENT";
}
