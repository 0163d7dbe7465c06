import { chmod, open, stat } from "node:fs/promises";
import { join } from "node:path";
import { GroupId } from "@mastodon-mls/protocol";
import {
  DIR_MODE,
  ensureDir,
  exists,
  fsyncDir,
  listDir,
  readFileIfExists,
  removeFileDurably,
  removeStaleTempFiles,
  type AtomicWriteHooks,
} from "./atomicFile.js";
import { StoreFormatError, readRecord, writeRecord } from "./records.js";
import {
  CursorsRecord,
  DeviceRecord,
  GroupRecord,
  HistoryEntry,
  KeyPackageRecord,
  PendingCommitRecord,
} from "./schemas.js";

/**
 * One directory per device:
 *
 *   device.json                     keys, certificate, Mastodon token, home services
 *   cursors.json                    hub URL → last processed inbox cursor
 *   keypackages/<ref>.json          private KeyPackages not yet used by a Welcome
 *   groups/<groupId>/group.json     MLS state, last processed sequence number, leaf checks, buffer
 *   groups/<groupId>/pending.json   a commit posted (or about to be) but not yet known to be accepted
 *   groups/<groupId>/history.jsonl  decrypted messages, one JSON object per line
 */
export class DeviceStore {
  constructor(
    readonly dir: string,
    /** Test seam for crash simulation; see AtomicWriteHooks. */
    readonly hooks: AtomicWriteHooks = {},
  ) {}

  static async create(dir: string): Promise<DeviceStore> {
    if (await exists(join(dir, "device.json"))) {
      throw new Error(`${dir} already holds a device; open it instead`);
    }
    await ensureDir(dir);
    // mkdir's mode does not apply to a directory that already existed (e.g. an empty one made by the user).
    await chmod(dir, DIR_MODE);
    const store = new DeviceStore(dir);
    await Promise.all([ensureDir(store.keyPackagesDir), ensureDir(store.groupsDir)]);
    return store;
  }

  static async open(dir: string): Promise<DeviceStore> {
    if (!(await exists(join(dir, "device.json")))) throw new Error(`${dir} holds no device`);
    const mode = (await stat(dir)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new Error(`${dir} is readable by other users (mode ${mode.toString(8)}); chmod 700 it`);
    }
    const store = new DeviceStore(dir);
    await removeStaleTempFiles(dir);
    await removeStaleTempFiles(store.keyPackagesDir);
    for (const g of await listDir(store.groupsDir)) await removeStaleTempFiles(join(store.groupsDir, g));
    return store;
  }

  get keyPackagesDir(): string {
    return join(this.dir, "keypackages");
  }

  get groupsDir(): string {
    return join(this.dir, "groups");
  }

  private groupDir(groupId: string): string {
    // Group ids come from hubs: never let one name a path outside the groups directory.
    if (!GroupId.safeParse(groupId).success) throw new Error(`not a group id: ${groupId}`);
    return join(this.groupsDir, groupId);
  }

  // device.json

  async readDevice(): Promise<DeviceRecord> {
    const path = join(this.dir, "device.json");
    const rec = await readRecord(path, "mls-dm.device", DeviceRecord);
    if (rec === undefined) throw new StoreFormatError(path, "missing");
    return rec;
  }

  async writeDevice(rec: DeviceRecord): Promise<void> {
    return writeRecord(join(this.dir, "device.json"), "mls-dm.device", rec, this.hooks);
  }

  // cursors.json

  async readCursors(): Promise<CursorsRecord> {
    return (
      (await readRecord(join(this.dir, "cursors.json"), "mls-dm.cursors", CursorsRecord)) ?? { hubs: {} }
    );
  }

  async writeCursors(rec: CursorsRecord): Promise<void> {
    return writeRecord(join(this.dir, "cursors.json"), "mls-dm.cursors", rec, this.hooks);
  }

  // keypackages/

  private keyPackagePath(ref: string): string {
    if (!/^[A-Za-z0-9_-]{43}$/.test(ref)) throw new Error(`not a KeyPackage ref: ${ref}`);
    return join(this.keyPackagesDir, `${ref}.json`);
  }

  async writeKeyPackage(rec: KeyPackageRecord): Promise<void> {
    return writeRecord(this.keyPackagePath(rec.ref), "mls-dm.keypackage", rec, this.hooks);
  }

  async readKeyPackage(ref: string): Promise<KeyPackageRecord | undefined> {
    return readRecord(this.keyPackagePath(ref), "mls-dm.keypackage", KeyPackageRecord);
  }

  async listKeyPackageRefs(): Promise<string[]> {
    return (await listDir(this.keyPackagesDir))
      .filter((n) => n.endsWith(".json"))
      .map((n) => n.slice(0, -".json".length));
  }

  async deleteKeyPackage(ref: string): Promise<void> {
    return removeFileDurably(this.keyPackagePath(ref));
  }

  // groups/<groupId>/

  async listGroupIds(): Promise<string[]> {
    const ids = await listDir(this.groupsDir);
    const present = await Promise.all(ids.map((id) => exists(join(this.groupsDir, id, "group.json"))));
    return ids.filter((_, i) => present[i]);
  }

  async readGroup(groupId: string): Promise<GroupRecord | undefined> {
    return readRecord(join(this.groupDir(groupId), "group.json"), "mls-dm.group", GroupRecord);
  }

  async writeGroup(rec: GroupRecord): Promise<void> {
    const dir = this.groupDir(rec.groupId);
    await ensureDir(dir);
    await writeRecord(join(dir, "group.json"), "mls-dm.group", rec, this.hooks);
  }

  async readPending(groupId: string): Promise<PendingCommitRecord | undefined> {
    return readRecord(
      join(this.groupDir(groupId), "pending.json"),
      "mls-dm.pending-commit",
      PendingCommitRecord,
    );
  }

  async writePending(groupId: string, rec: PendingCommitRecord): Promise<void> {
    const dir = this.groupDir(groupId);
    await ensureDir(dir);
    await writeRecord(join(dir, "pending.json"), "mls-dm.pending-commit", rec, this.hooks);
  }

  async deletePending(groupId: string): Promise<void> {
    return removeFileDurably(join(this.groupDir(groupId), "pending.json"));
  }

  /**
   * Appends messages to the group's history and fsyncs. A crash mid-append leaves at most a torn last
   * line, which `readHistory` skips; an entry whose seq is already there is skipped on read too, so
   * re-processing after a crash never shows a message twice.
   */
  async appendHistory(groupId: string, entries: HistoryEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const dir = this.groupDir(groupId);
    await ensureDir(dir);
    const path = join(dir, "history.jsonl");
    const created = !(await exists(path));
    const handle = await open(path, "a", 0o600);
    try {
      await handle.writeFile(entries.map((e) => `\n${JSON.stringify(e)}`).join(""));
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (created) await fsyncDir(dir);
  }

  async readHistory(groupId: string): Promise<HistoryEntry[]> {
    const bytes = await readFileIfExists(join(this.groupDir(groupId), "history.jsonl"));
    if (bytes === undefined) return [];
    const seen = new Set<number>();
    const out: HistoryEntry[] = [];
    for (const line of bytes.toString("utf8").split("\n")) {
      if (line === "") continue;
      let parsed: ReturnType<typeof HistoryEntry.safeParse>;
      try {
        parsed = HistoryEntry.safeParse(JSON.parse(line));
      } catch {
        continue; // a torn last line from a crash mid-append
      }
      if (!parsed.success || seen.has(parsed.data.seq)) continue;
      seen.add(parsed.data.seq);
      out.push(parsed.data);
    }
    return out.sort((a, b) => a.seq - b.seq);
  }
}
