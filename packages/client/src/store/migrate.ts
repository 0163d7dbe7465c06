import { stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import type { KdfPolicy } from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import { exists, listDir, readFileIfExists, removeFileDurably, writeFileAtomic } from "./atomicFile.js";
import { STORE_KEY_FILE, newStoreKey, type StoreCipher, type StoreProtection } from "./cipher.js";
import { DeviceStore, MIGRATION_SUFFIX, finishMigration } from "./deviceStore.js";
import { StoreFormatError, parseLegacyRecord } from "./records.js";
import {
  CursorsRecord,
  DeviceRecord,
  GroupRecordV1,
  HistoryEntry,
  KeyPackageRecord,
  PendingCommitRecord,
  type GroupRecord,
} from "./schemas.js";

// Format 1 → format 2 (encrypted, or plain by choice), in place and crash-safe:
//   1. every file is converted into `<file>.migrate` (stale ones from an interrupted attempt go first);
//   2. store-key.json is written: from here on the directory is format 2;
//   3. each `<file>.migrate` replaces `<file>` (finishMigration, which every open also runs).
// A crash before 2 leaves a format-1 directory (run migrate again); after 2, opening finishes the job.
// Nothing of format 1 is ever read as format 2: the reader of a format-2 directory refuses plain files.

export async function migrateLegacyStore(
  dir: string,
  protection: StoreProtection,
  opts: KdfPolicy & { onProgress?: (fraction: number) => void; now?: number } = {},
): Promise<DeviceStore> {
  const state = await DeviceStore.inspect(dir);
  if (state.kind !== "legacy") {
    throw new ClientError(
      state.kind === "store" ? "device_exists" : "no_device",
      state.kind === "store" ? `${dir} is already in the current format` : `${dir} holds no format-1 device`,
    );
  }
  const mode = (await stat(dir)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new ClientError(
      "bad_input",
      `${dir} is accessible by other users (mode ${mode.toString(8)}); chmod 700 it`,
    );
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const files = await legacyFiles(dir);
  for (const f of files) await removeFileDurably(`${f}${MIGRATION_SUFFIX}`);

  const key = await newStoreKey(protection, opts, opts.onProgress);
  const rel = (p: string) => relative(dir, p).split(sep).join("/");
  for (const path of files) {
    const text = (await readFileIfExists(path))?.toString("utf8");
    if (text === undefined) continue;
    const out = convert(path, rel(path), text, key.cipher, now);
    await writeFileAtomic(`${path}${MIGRATION_SUFFIX}`, out);
  }
  await writeFileAtomic(join(dir, STORE_KEY_FILE), key.text);
  await finishMigration(dir);
  return DeviceStore.open(dir, {
    ...(protection.kind === "passphrase" ? { passphrase: protection.passphrase } : {}),
    ...opts,
  });
}

async function legacyFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of ["device.json", "cursors.json"]) {
    if (await exists(join(dir, name))) out.push(join(dir, name));
  }
  for (const name of await listDir(join(dir, "keypackages"))) {
    if (/^[A-Za-z0-9_-]{43}\.json$/.test(name)) out.push(join(dir, "keypackages", name));
  }
  for (const g of await listDir(join(dir, "groups"))) {
    for (const name of ["group.json", "pending.json", "history.jsonl"]) {
      const p = join(dir, "groups", g, name);
      if (await exists(p)) out.push(p);
    }
  }
  return out;
}

function convert(path: string, relPath: string, text: string, cipher: StoreCipher, now: number): string {
  const name = relPath.split("/").at(-1);
  switch (name) {
    case "device.json":
      return cipher.encodeRecord(
        "mls-dm.device",
        relPath,
        parseLegacyRecord(path, "mls-dm.device", DeviceRecord, text),
      );
    case "cursors.json":
      return cipher.encodeRecord(
        "mls-dm.cursors",
        relPath,
        parseLegacyRecord(path, "mls-dm.cursors", CursorsRecord, text),
      );
    case "group.json": {
      const v1 = parseLegacyRecord(path, "mls-dm.group", GroupRecordV1, text);
      // Unknown when the leaf was last updated: count from now (the weekly self-update follows in a week).
      const v2: GroupRecord = { ...v1, ownLeafUpdatedAt: now, leaving: [] };
      return cipher.encodeRecord("mls-dm.group", relPath, v2);
    }
    case "pending.json":
      return cipher.encodeRecord(
        "mls-dm.pending-commit",
        relPath,
        parseLegacyRecord(path, "mls-dm.pending-commit", PendingCommitRecord, text),
      );
    case "history.jsonl": {
      const lines: string[] = [];
      for (const line of text.split("\n")) {
        if (line === "") continue;
        let entry: unknown;
        try {
          entry = JSON.parse(line);
        } catch {
          continue; // a torn last line, as format 1 allowed
        }
        const parsed = HistoryEntry.safeParse(entry);
        if (parsed.success) lines.push(cipher.encodeLine(relPath, parsed.data));
      }
      return lines.map((l) => `\n${l}`).join("");
    }
    default:
      if (relPath.startsWith("keypackages/")) {
        return cipher.encodeRecord(
          "mls-dm.keypackage",
          relPath,
          parseLegacyRecord(path, "mls-dm.keypackage", KeyPackageRecord, text),
        );
      }
      throw new StoreFormatError(path, "unexpected file in a format-1 directory");
  }
}
