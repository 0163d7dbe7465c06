import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { GroupId } from "@mastodon-mls/protocol";
import type { KdfPolicy } from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import { allDone } from "../util/allDone.js";
import {
  DIR_MODE,
  FILE_MODE,
  appendSync,
  ensureDir,
  exists,
  fsyncDir,
  intoDir,
  isNotFound,
  listDir,
  readFileIfExists,
  readSmallFileSync,
  removeFile,
  removeFileDurably,
  removeStaleTempFiles,
  writeFileAtomic,
  writeFilesAtomicInOrder,
  writeMarkerSync,
  type AtomicWriteHooks,
} from "./atomicFile.js";
import {
  STORE_KEY_FILE,
  contentProtection,
  newStoreKey,
  readProtection,
  unlockStoreKey,
  type StoreCipher,
  type StoreProtection,
  type UnlockOptions,
} from "./cipher.js";
import { emptyIdAuthors, noteIdAuthors, type IdAuthors } from "./historyIds.js";
import { LOCK_FILE, tryDeviceLock } from "./lock.js";
import { StoreFormatError, readRecord, writeRecord } from "./records.js";
import {
  CursorsRecord,
  DeviceRecord,
  GroupMembersRecord,
  GroupRecord,
  HistoryEntry,
  KeyPackageRecord,
  PendingCommitRecord,
  PendingLinkRecord,
  GroupBaseRecord,
  PinsRecord,
  SessionRecord,
} from "./schemas.js";

/** What a directory holds, found without a passphrase. */
export type DirectoryState =
  | { kind: "absent" }
  | { kind: "empty" }
  /** Format 1 (unencrypted, first release): `migrate` converts it. */
  | { kind: "legacy" }
  | { kind: "store"; protection: "passphrase" | "none"; hasDevice: boolean; hasSession: boolean }
  /** Not empty and not ours: never written into. */
  | { kind: "foreign" };

/**
 * group.json's kinds, newest first. "mls-dm.group-delta" (secret-tree nodes apart from the rest of the
 * state, `secretNodes`) has its own name so that an earlier release refuses it as not its kind, instead of
 * reading the delta without its secret tree and writing that back; "mls-dm.group" is read, never written.
 */
export const GROUP_FORMATS = ["mls-dm.group-delta", "mls-dm.group"] as const;

/** Suffix of the files a migration writes before switching over (see migrate.ts). */
export const MIGRATION_SUFFIX = ".migrate";
/** The marker telling other processes to re-read (see bumpGeneration). */
export const GENERATION_FILE = "generation";

/**
 * One directory per device:
 *
 *   store-key.json                  how the directory is protected (the wrapped data key, or "none")
 *   session.json                    the Mastodon login: instance, account, token, services
 *   device.json                     keys, certificate, Mastodon token, home services
 *   cursors.json                    hub URL → last processed inbox cursor
 *   pins.json                       acct → pinned account key (trust on first use)
 *   keypackages/<ref>.json          private KeyPackages not yet used by a Welcome
 *   link.json                       a device being linked: its key until its certificate arrives
 *   groups/<groupId>/base-<h>.json  the whole MLS state when its tree or past epochs last changed
 *   groups/<groupId>/group.json     the rest of the MLS state (a delta on that base), last processed
 *                                   sequence number, leaf checks, buffer
 *   groups/<groupId>/pending.json   a commit posted (or about to be) but not yet known to be accepted
 *   groups/<groupId>/history.jsonl  decrypted messages, one sealed entry per line
 *   lock, generation                which process works on the directory, and whether another changed it
 *
 * Every file but store-key.json, lock and generation is sealed under the data key (cipher.ts) unless the
 * owner opted out.
 */
export class DeviceStore {
  /** Files written through this instance since it was opened. */
  writes = 0;
  /** beginOperation() count, and the operation whose first write bumped the generation marker. */
  private operation = 0;
  private announcedIn = -1;

  private constructor(
    readonly dir: string,
    readonly cipher: StoreCipher,
    /** store-key.json as it was when this store was unlocked (or last found to be a rewrap of it). */
    private keyText: string,
    /** Test seam for crash simulation; see AtomicWriteHooks. */
    readonly hooks: AtomicWriteHooks = {},
  ) {}

  /** Per group, members.json as last written or read by this store (writeGroup skips an unchanged one). */
  private readonly membersWritten = new Map<string, string>();

  /** Per group, the ids of its history and their authors, and how far into which file they were read. */
  private readonly idAuthorIndex = new Map<string, { ino: number; size: number; known: IdAuthors }>();

  /**
   * Run under the directory's lock before an operation: whether this store's key still reads and writes
   * the directory. Another process may have re-protected it meanwhile (`change-passphrase`), and the
   * generation marker that tells other processes to re-read is not durable: a switch cut short, or one
   * whose marker was lost, must still stop a process holding the old key from writing files the new key
   * cannot read (or plain files into an encrypted directory). A new passphrase for the same data key is
   * fine: the store goes on. Only store-key.json is read unless it changed.
   */
  async keyStillValid(): Promise<boolean> {
    const path = join(this.dir, STORE_KEY_FILE);
    // Before every operation: read on this thread, like the lock file (a few hundred bytes).
    const text = readSmallFileSync(path)?.toString("utf8");
    if (text === this.keyText) return true;
    if (text === undefined) return false;
    let kind: "passphrase" | "none";
    try {
      kind = readProtection(path, text);
    } catch {
      return false;
    }
    if (kind !== this.cipher.protection) return false;
    if (kind === "passphrase") {
      // The same data key wrapped anew, or another one (a switch to none and back): this key opens the
      // directory's files only in the first case.
      try {
        await this.readDevice();
      } catch (e) {
        if (e instanceof StoreFormatError) return false;
        throw e;
      }
    }
    this.keyText = text;
    return true;
  }

  static async inspect(dir: string): Promise<DirectoryState> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as { code?: unknown }).code === "ENOENT") return { kind: "absent" };
      throw e;
    }
    if (names.includes(STORE_KEY_FILE)) {
      const path = join(dir, STORE_KEY_FILE);
      const text = (await readFileIfExists(path))?.toString("utf8") ?? "";
      return {
        kind: "store",
        protection: readProtection(path, text),
        hasDevice: names.includes("device.json"),
        hasSession: names.includes("session.json"),
      };
    }
    if (names.includes("device.json")) return { kind: "legacy" };
    return names.length === 0 ? { kind: "empty" } : { kind: "foreign" };
  }

  /** A new, empty device directory protected as asked. `dir` must not exist or be empty. */
  static async create(
    dir: string,
    protection: StoreProtection,
    opts: KdfPolicy & { onProgress?: (fraction: number) => void } = {},
  ): Promise<DeviceStore> {
    const state = await DeviceStore.inspect(dir);
    if (state.kind === "store" || state.kind === "legacy") {
      throw new ClientError("device_exists", `${dir} already holds a device directory; open it instead`);
    }
    if (state.kind === "foreign") {
      throw new ClientError(
        "device_exists",
        `${dir} is not empty and not a device directory; choose another`,
      );
    }
    const key = await newStoreKey(protection, opts, opts.onProgress);
    await ensureDir(dir);
    // mkdir's mode does not apply to a directory that already existed (e.g. an empty one made by the user).
    await chmod(dir, DIR_MODE);
    const store = new DeviceStore(dir, key.cipher, key.text);
    await Promise.all([ensureDir(store.keyPackagesDir), ensureDir(store.groupsDir)]);
    await writeFileAtomic(join(dir, STORE_KEY_FILE), key.text);
    return store;
  }

  /**
   * Unlocks a device directory. Nothing is written before the passphrase is known to be right: a wrong
   * one leaves the directory exactly as it was.
   */
  static async open(
    dir: string,
    opts: UnlockOptions & { hooks?: AtomicWriteHooks } = {},
  ): Promise<DeviceStore> {
    const state = await DeviceStore.inspect(dir);
    if (state.kind === "absent" || state.kind === "empty") {
      throw new ClientError("no_device", `${dir} holds no device`);
    }
    if (state.kind === "foreign") throw new ClientError("no_device", `${dir} is not a device directory`);
    if (state.kind === "legacy") {
      throw new ClientError(
        "needs_migration",
        `${dir} was written by an earlier release (format 1, unencrypted); run \`mls-dm migrate\` to ` +
          "encrypt it (or MlsDmClient.migrate)",
      );
    }
    const { cipher, text } = await unlockDirectory(dir, opts);
    const store = new DeviceStore(dir, cipher, text, opts.hooks ?? {});
    // A temporary file is a write in progress while another process holds the lock (its rename would
    // then fail), and so may be a `.migrate` file: both are swept only when no process is working on the
    // directory. The renames that finish a switch-over are safe either way (finishMigration).
    const lock = await tryDeviceLock(dir);
    if (lock === undefined) await finishMigration(dir);
    else {
      try {
        await finishMigration(dir, { sweep: true });
        await removeStaleTempFiles(dir);
        await removeStaleTempFiles(store.keyPackagesDir);
        for (const g of await listDir(store.groupsDir)) await removeStaleTempFiles(join(store.groupsDir, g));
      } finally {
        await lock.release();
      }
    }
    return store;
  }

  get protection(): "passphrase" | "none" {
    return this.cipher.protection;
  }

  get keyPackagesDir(): string {
    return join(this.dir, "keypackages");
  }

  get groupsDir(): string {
    return join(this.dir, "groups");
  }

  get lockPath(): string {
    return join(this.dir, LOCK_FILE);
  }

  private groupDir(groupId: string): string {
    // Group ids come from hubs: never let one name a path outside the groups directory.
    if (!GroupId.safeParse(groupId).success) throw new Error(`not a group id: ${groupId}`);
    return join(this.groupsDir, groupId);
  }

  private rel(path: string): string {
    return relative(this.dir, path).split(sep).join("/");
  }

  private async write(path: string, format: string, body: object): Promise<void> {
    this.noteWrite();
    await writeRecord(path, this.rel(path), format, body, this.cipher, this.hooks);
  }

  private read<T>(
    path: string,
    format: string | readonly string[],
    schema: import("zod").ZodType<T>,
  ): Promise<T | undefined> {
    return readRecord(path, this.rel(path), format, schema, this.cipher);
  }

  // generation: lets another process see that this one changed the directory (see MlsDmClient)

  /**
   * Starts an operation under the directory's lock: its first write announces itself (bumps the
   * generation marker) before it happens, so that a process killed in the middle of an operation has
   * already told every other live process to re-read. An announcement after the operation would never
   * come from a process that died, and another process would go on from its older copy of the state
   * (a ratchet moved on there: a key generation used twice).
   */
  beginOperation(): void {
    this.operation++;
  }

  private noteWrite(): void {
    this.writes++;
    if (this.announcedIn === this.operation) return;
    this.announcedIn = this.operation;
    this.bumpGeneration();
  }

  readGeneration(): string {
    return readSmallFileSync(join(this.dir, GENERATION_FILE))?.toString("utf8") ?? "";
  }

  bumpGeneration(): string {
    const token = randomBytes(12).toString("hex");
    // Only tells other live processes to re-read: after a crash of the machine every process starts by
    // reading anyway, so the marker needs no fsync (two per operation otherwise).
    writeMarkerSync(join(this.dir, GENERATION_FILE), token);
    return token;
  }

  // session.json

  async readSession(): Promise<SessionRecord | undefined> {
    return this.read(join(this.dir, "session.json"), "mls-dm.session", SessionRecord);
  }

  async writeSession(rec: SessionRecord): Promise<void> {
    return this.write(join(this.dir, "session.json"), "mls-dm.session", rec);
  }

  // device.json

  async hasDevice(): Promise<boolean> {
    return exists(join(this.dir, "device.json"));
  }

  async readDevice(): Promise<DeviceRecord> {
    const path = join(this.dir, "device.json");
    const rec = await this.read(path, "mls-dm.device", DeviceRecord);
    if (rec === undefined) throw new ClientError("no_device", `${this.dir} holds no device yet`);
    return rec;
  }

  async writeDevice(rec: DeviceRecord): Promise<void> {
    return this.write(join(this.dir, "device.json"), "mls-dm.device", rec);
  }

  // link.json: a device being linked keeps its key here until its certificate arrives

  async readLink(): Promise<PendingLinkRecord | undefined> {
    return this.read(join(this.dir, "link.json"), "mls-dm.link", PendingLinkRecord);
  }

  async writeLink(rec: PendingLinkRecord): Promise<void> {
    return this.write(join(this.dir, "link.json"), "mls-dm.link", rec);
  }

  async deleteLink(): Promise<void> {
    this.noteWrite();
    return removeFileDurably(join(this.dir, "link.json"));
  }

  // pins.json

  async readPins(): Promise<PinsRecord> {
    return (await this.read(join(this.dir, "pins.json"), "mls-dm.pins", PinsRecord)) ?? { pins: {} };
  }

  async writePins(rec: PinsRecord): Promise<void> {
    return this.write(join(this.dir, "pins.json"), "mls-dm.pins", rec);
  }

  // cursors.json

  async readCursors(): Promise<CursorsRecord> {
    return (await this.read(join(this.dir, "cursors.json"), "mls-dm.cursors", CursorsRecord)) ?? { hubs: {} };
  }

  async writeCursors(rec: CursorsRecord): Promise<void> {
    return this.write(join(this.dir, "cursors.json"), "mls-dm.cursors", rec);
  }

  // keypackages/

  private keyPackagePath(ref: string): string {
    if (!/^[A-Za-z0-9_-]{43}$/.test(ref)) throw new Error(`not a KeyPackage ref: ${ref}`);
    return join(this.keyPackagesDir, `${ref}.json`);
  }

  async writeKeyPackage(rec: KeyPackageRecord): Promise<void> {
    return this.write(this.keyPackagePath(rec.ref), "mls-dm.keypackage", rec);
  }

  async readKeyPackage(ref: string): Promise<KeyPackageRecord | undefined> {
    return this.read(this.keyPackagePath(ref), "mls-dm.keypackage", KeyPackageRecord);
  }

  async listKeyPackageRefs(): Promise<string[]> {
    return (await listDir(this.keyPackagesDir))
      .filter((n) => /^[A-Za-z0-9_-]{43}\.json$/.test(n))
      .map((n) => n.slice(0, -".json".length));
  }

  async deleteKeyPackage(ref: string): Promise<void> {
    this.noteWrite();
    return removeFileDurably(this.keyPackagePath(ref));
  }

  // groups/<groupId>/

  async listGroupIds(): Promise<string[]> {
    const ids = (await listDir(this.groupsDir)).filter((id) => GroupId.safeParse(id).success);
    const present = await Promise.all(ids.map((id) => exists(join(this.groupsDir, id, "group.json"))));
    return ids.filter((_, i) => present[i]);
  }

  async readGroup(groupId: string): Promise<GroupRecord | undefined> {
    const rec = await this.read(join(this.groupDir(groupId), "group.json"), GROUP_FORMATS, GroupRecord);
    if (rec !== undefined && rec.groupId !== groupId) {
      throw new StoreFormatError(join(this.groupDir(groupId), "group.json"), "holds another group");
    }
    if (rec === undefined) return undefined;
    const members = await this.read(this.membersPath(groupId), "mls-dm.group-members", GroupMembersRecord);
    if (members === undefined) return rec; // written before members.json existed: all in group.json
    this.membersWritten.set(groupId, JSON.stringify(members));
    const { memberStatuses, leaves, processedCommits } = members;
    return {
      ...rec,
      leaves,
      ...(memberStatuses === undefined ? {} : { memberStatuses }),
      ...(processedCommits === undefined ? {} : { processedCommits }),
    };
  }

  /**
   * group.json, and the leaf checks, announced statuses and processed commits in members.json beside it:
   * the first grow with the group (~140 KiB at 512 members), the last take ~10 KiB, and all change with
   * commits and verification, not with every message, so members.json is written only when they changed.
   * Either file may be the newer one after a crash: a leaf check names the certificate it is for (a stale
   * one is checked again), a stale status is announced again, and a commit missing from an older list only
   * leaves a fork notice about it unproven (a newer list names a commit that is processed again the same).
   */
  async writeGroup(rec: GroupRecord): Promise<void> {
    const dir = this.groupDir(rec.groupId);
    await intoDir(dir, () => this.writeGroupFiles(dir, rec));
  }

  private async writeGroupFiles(dir: string, rec: GroupRecord): Promise<void> {
    const { leaves, memberStatuses, processedCommits, ...rest } = rec;
    const members: GroupMembersRecord = {
      leaves,
      ...(memberStatuses === undefined ? {} : { memberStatuses }),
      ...(processedCommits === undefined ? {} : { processedCommits }),
    };
    const text = JSON.stringify(members);
    // Neither file needs the other on disk first (see writeGroup): they are written side by side.
    await allDone([
      this.membersWritten.get(rec.groupId) === text
        ? undefined
        : this.write(this.membersPath(rec.groupId), "mls-dm.group-members", members).then(() =>
            this.membersWritten.set(rec.groupId, text),
          ),
      this.write(join(dir, "group.json"), GROUP_FORMATS[0], { ...rest, leaves: {} }),
    ]);
  }

  private membersPath(groupId: string): string {
    return join(this.groupDir(groupId), "members.json");
  }

  private basePath(groupId: string, name: string): string {
    if (!/^[A-Za-z0-9_-]{43}$/.test(name)) throw new Error(`not a state base name: ${name}`);
    return join(this.groupDir(groupId), `base-${name}.json`);
  }

  /** A group's state base snapshot (the whole encoded state at the time), named by its hash. */
  async writeGroupBase(groupId: string, name: string, state: string): Promise<void> {
    await intoDir(this.groupDir(groupId), () =>
      this.write(this.basePath(groupId, name), "mls-dm.group-base", { state }),
    );
  }

  async readGroupBase(groupId: string, name: string): Promise<string | undefined> {
    return (await this.read(this.basePath(groupId, name), "mls-dm.group-base", GroupBaseRecord))?.state;
  }

  async hasGroupBase(groupId: string, name: string): Promise<boolean> {
    return exists(this.basePath(groupId, name));
  }

  /**
   * Deletes the group's base snapshots but those in `keep` (after group.json stopped naming them). Not
   * durably while one is kept: one back after a power loss is named by nothing and goes with the next
   * deletion. Durably when none is (a group left).
   */
  async deleteGroupBases(groupId: string, keep: readonly string[]): Promise<void> {
    const stale = (await listDir(this.groupDir(groupId))).filter((file) => {
      const m = /^base-([A-Za-z0-9_-]{43})\.json$/.exec(file);
      return m !== null && !keep.includes(m[1]!);
    });
    if (stale.length === 0) return;
    this.noteWrite();
    await allDone(stale.map((file) => removeFile(join(this.groupDir(groupId), file))));
    // A group left keeps no base, and no later deletion would take one that came back: its secrets go
    // for good now.
    if (keep.length === 0) await fsyncDir(this.groupDir(groupId));
  }

  async readPending(groupId: string): Promise<PendingCommitRecord | undefined> {
    return this.read(
      join(this.groupDir(groupId), "pending.json"),
      "mls-dm.pending-commit",
      PendingCommitRecord,
    );
  }

  async writePending(groupId: string, rec: PendingCommitRecord): Promise<void> {
    await this.writePendingWithBase(groupId, undefined, rec);
  }

  /**
   * A pending commit and, when given, the base snapshot it names: the snapshot is durable before
   * pending.json appears, and the two are written and fsynced side by side (writeFilesAtomicInOrder).
   */
  async writePendingWithBase(
    groupId: string,
    base: { name: string; state: string } | undefined,
    rec: PendingCommitRecord,
  ): Promise<void> {
    const dir = this.groupDir(groupId);
    const files = [
      ...(base === undefined
        ? []
        : [
            {
              path: this.basePath(groupId, base.name),
              format: "mls-dm.group-base",
              body: { state: base.state },
            },
          ]),
      { path: join(dir, "pending.json"), format: "mls-dm.pending-commit", body: rec },
    ];
    this.noteWrite();
    await intoDir(dir, () =>
      writeFilesAtomicInOrder(
        files.map((f) => ({
          path: f.path,
          data: this.cipher.encodeRecord(f.format, this.rel(f.path), f.body),
        })),
        this.hooks,
      ),
    );
  }

  /**
   * Not durably: after a process crash the deletion stands (the kernel has it); only a power loss in the
   * seconds after it can bring the file back, and a pending commit whose epoch the group has left is
   * settled with the hub like any pending commit of unknown outcome (commitPipeline.ts settlePending:
   * the hub names the winner; at worst the change is made again: an add or remove then finds nothing
   * left to do, a self-update happens twice).
   */
  async deletePending(groupId: string): Promise<void> {
    this.noteWrite();
    return removeFile(join(this.groupDir(groupId), "pending.json"));
  }

  /**
   * Appends messages to the group's history and fsyncs. A crash mid-append leaves at most a torn last
   * line, which `readHistory` skips; an entry whose seq is already there is skipped on read too, so
   * re-processing after a crash never shows a message twice. `durable: false` leaves the fsync to a later
   * `flushHistory` (or to the next durable append): only for lines whose content is on disk elsewhere
   * meanwhile (the group's outbox, groups/outbox.ts). A file that had to be created is always made durable.
   */
  async appendHistory(
    groupId: string,
    entries: HistoryEntry[],
    opts: { durable?: boolean } = {},
  ): Promise<void> {
    if (entries.length === 0) return;
    this.noteWrite();
    const dir = this.groupDir(groupId);
    const path = join(dir, "history.jsonl");
    const rel = this.rel(path);
    const text = () => entries.map((e) => `\n${this.cipher.encodeLine(rel, e)}`).join("");
    // Not durable (a sent message's line, whose outbox entry keeps it until a flush: D15), into a file
    // that exists: on this thread, as the lock and marker are. A few KiB into the page cache take
    // microseconds; through the thread pool its three calls cost 0.6–1 ms on the path of every message
    // (bench/client, BENCH_TRACE=message).
    if (opts.durable === false && appendSync(path, text())) return;
    let created = false;
    // The file nearly always exists: open it as it is, and make the directory and file only when missing.
    const handle = await open(path, constants.O_WRONLY | constants.O_APPEND).catch(async (e: unknown) => {
      if (!isNotFound(e)) throw e;
      created = true;
      return intoDir(dir, () =>
        open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, FILE_MODE),
      );
    });
    try {
      await handle.writeFile(text());
      if (opts.durable !== false || created) await handle.sync();
    } finally {
      await handle.close();
    }
    if (created) await fsyncDir(dir);
  }

  /**
   * Who first used each note id and activity id of the group's history (TXT-5, TXT-6), without reading
   * the whole history for every message: a history file only grows, so what was read is kept with the
   * file's size, and only what was appended since (by any process) is read. Another file in its place (a
   * change of passphrase rewrites it) is read again whole. Lines that do not read are skipped here
   * (`readHistory` reports them).
   */
  async historyIdAuthors(groupId: string): Promise<IdAuthors> {
    const path = join(this.groupDir(groupId), "history.jsonl");
    let handle;
    try {
      handle = await open(path, constants.O_RDONLY);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      this.idAuthorIndex.delete(groupId);
      return emptyIdAuthors();
    }
    try {
      const { ino, size } = await handle.stat();
      let index = this.idAuthorIndex.get(groupId);
      if (index === undefined || index.ino !== ino || size < index.size) {
        index = { ino, size: 0, known: emptyIdAuthors() };
      }
      if (size > index.size) {
        const buf = Buffer.alloc(size - index.size);
        const { bytesRead } = await handle.read(buf, 0, buf.length, index.size);
        // Lines are appended as "\n<line>", so what follows the last size read starts at a line.
        const lines = buf.subarray(0, bytesRead).toString("utf8").split("\n");
        for (const entry of this.readableEntries(path, lines)) noteIdAuthors(index.known, entry);
        index.size += bytesRead;
      }
      this.idAuthorIndex.set(groupId, index);
      return index.known;
    } finally {
      await handle.close();
    }
  }

  /** Makes every line appended to the group's history so far durable (see appendHistory). */
  async flushHistory(groupId: string): Promise<void> {
    const handle = await open(join(this.groupDir(groupId), "history.jsonl"), constants.O_WRONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /**
   * Whether one of the last lines of the group's history (those within its final `tailBytes`) has
   * sequence number `seq`: what a device recovering its own sent messages checks before appending one
   * (a line further back may be appended twice, which `readHistory` shows once).
   */
  async historyTailHas(groupId: string, seq: number, tailBytes = 64 * 1024): Promise<boolean> {
    return (await this.historyTailEntry(groupId, seq, tailBytes)) !== undefined;
  }

  /** The line of `historyTailHas`, when there is one. */
  async historyTailEntry(
    groupId: string,
    seq: number,
    tailBytes = 64 * 1024,
  ): Promise<HistoryEntry | undefined> {
    const path = join(this.groupDir(groupId), "history.jsonl");
    let handle;
    try {
      handle = await open(path, constants.O_RDONLY);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    let text: string;
    try {
      const { size } = await handle.stat();
      const start = Math.max(0, size - Math.floor(tailBytes));
      const buf = Buffer.alloc(size - start);
      const { bytesRead } = await handle.read(buf, 0, buf.length, start);
      text = buf.subarray(0, bytesRead).toString("utf8");
    } finally {
      await handle.close();
    }
    // Every line starts after a newline; what comes before the first one here may be a line cut short.
    for (const entry of this.readableEntries(path, text.split("\n").slice(1))) {
      if (entry.seq === seq) return entry;
    }
    return undefined;
  }

  /**
   * The history entries of these lines that read; a damaged or torn line is skipped (reporting it is
   * `readHistory`'s job: here it is only not one looked for).
   */
  private *readableEntries(path: string, lines: readonly string[]): Generator<HistoryEntry> {
    const rel = this.rel(path);
    for (const line of lines) {
      if (line === "") continue;
      let entry: unknown;
      try {
        entry = this.cipher.decodeLine(path, rel, line, 0);
      } catch (e) {
        if (e instanceof StoreFormatError) continue;
        throw e;
      }
      const parsed = HistoryEntry.safeParse(entry);
      if (parsed.success) yield parsed.data;
    }
  }

  async readHistory(groupId: string): Promise<HistoryEntry[]> {
    const path = join(this.groupDir(groupId), "history.jsonl");
    const bytes = await readFileIfExists(path);
    if (bytes === undefined) return [];
    const rel = this.rel(path);
    const seen = new Set<number>();
    const out: HistoryEntry[] = [];
    const lines = bytes.toString("utf8").split("\n");
    for (const [i, line] of lines.entries()) {
      if (line === "") continue;
      const entry = this.cipher.decodeLine(path, rel, line, i + 1);
      if (entry === undefined) continue; // a torn last line from a crash mid-append
      const parsed = HistoryEntry.safeParse(entry);
      if (!parsed.success) throw new StoreFormatError(path, `line ${i + 1} is malformed`);
      if (seen.has(parsed.data.seq)) continue;
      seen.add(parsed.data.seq);
      out.push(parsed.data);
    }
    return out.sort((a, b) => a.seq - b.seq);
  }
}

/**
 * Unlocks a directory of the current format: refuses one other users can read (its files are secrets
 * whatever the protection), then opens store-key.json. Returns the cipher and the store-key.json text it
 * came from.
 */
export async function unlockDirectory(
  dir: string,
  opts: UnlockOptions,
): Promise<{ cipher: StoreCipher; text: string }> {
  const mode = (await stat(dir)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new ClientError(
      "bad_input",
      `${dir} is accessible by other users (mode ${mode.toString(8)}); chmod 700 it`,
    );
  }
  const keyPath = join(dir, STORE_KEY_FILE);
  const text = (await readFileIfExists(keyPath))?.toString("utf8") ?? "";
  return { cipher: await unlockStoreKey(keyPath, text, opts), text };
}

/**
 * The last step of a migration (migrate.ts) or of a protection change (rekey.ts), also run on every open:
 * once store-key.json says how the directory is protected, each `<file>.migrate` written before it
 * replaces its `<file>`. Idempotent, so a crash at any point is fine; a file another process renamed first
 * is fine too. With `sweep`, the other `.migrate` files are deleted.
 */
export async function finishMigration(dir: string, opts: { sweep?: boolean } = {}): Promise<void> {
  const keyPath = join(dir, STORE_KEY_FILE);
  const keyText = (await readFileIfExists(keyPath))?.toString("utf8");
  if (keyText === undefined) return;
  const protection = readProtection(keyPath, keyText);
  const dirs = [
    dir,
    join(dir, "keypackages"),
    ...(await listDir(join(dir, "groups"))).map((g) => join(dir, "groups", g)),
  ];
  for (const d of dirs) {
    const pending = (await listDir(d)).filter((n) => n.endsWith(MIGRATION_SUFFIX));
    let renamed = false;
    for (const name of pending) {
      const from = join(d, name);
      const text = (await readFileIfExists(from))?.toString("utf8");
      if (text === undefined) continue; // renamed by another process meanwhile
      // Written otherwise than store-key.json says: a protection change (rekey.ts) that has not reached
      // its switch-over — crashed before it, or under way in another process right now. Renaming it would
      // put a file the current key cannot read in place of a good one. It is left for that change to
      // finish or sweep, under the directory's lock.
      // A file whose kind does not show (a history without one complete line) holds nothing to keep either way.
      const kind = contentProtection(text);
      if (kind !== protection) {
        // `sweep` (only while holding the lock, so no change is under way): such a file is a leftover of
        // a change cut short before its switch-over — after one to "none", plain copies of every secret.
        if (opts.sweep === true) {
          await rm(from, { force: true });
          renamed = true;
        }
        continue;
      }
      try {
        await rename(from, join(d, name.slice(0, -MIGRATION_SUFFIX.length)));
        renamed = true;
      } catch (e) {
        if ((e as { code?: unknown }).code !== "ENOENT") throw e;
      }
    }
    if (renamed) await fsyncDir(d);
  }
}
