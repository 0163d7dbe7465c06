import { mkdtemp, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  appendSync,
  intoDir,
  readSmallFileSync,
  removeStaleTempFiles,
  writeFileAtomic,
  writeFilesAtomicInOrder,
  writeMarkerSync,
} from "./atomicFile.js";

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "mls-dm-atomic-"));
}

describe("writeFileAtomic", () => {
  it("replaces the content and creates files readable by the owner only", async () => {
    const dir = await tempDir();
    const path = join(dir, "f.json");
    await writeFileAtomic(path, "one");
    await writeFileAtomic(path, "two");
    expect(await readFile(path, "utf8")).toBe("two");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["f.json"]);
  });

  it("leaves the old file intact when the process dies between the temporary write and the rename", async () => {
    const dir = await tempDir();
    const path = join(dir, "f.json");
    await writeFileAtomic(path, "old");
    const crash = writeFileAtomic(path, "new", {
      beforeRename: () => {
        throw new Error("simulated crash");
      },
    });
    await expect(crash).rejects.toThrow("simulated crash");
    expect(await readFile(path, "utf8")).toBe("old");
    // The orphaned temporary file is what a real crash leaves; reopening the directory sweeps it.
    expect((await readdir(dir)).length).toBe(2);
    await removeStaleTempFiles(dir);
    expect(await readdir(dir)).toEqual(["f.json"]);
  });

  it("never follows a pre-existing temporary name (O_EXCL)", async () => {
    const dir = await tempDir();
    const path = join(dir, "f.json");
    await writeFile(join(dir, "unrelated"), "x");
    await writeFileAtomic(path, "content");
    expect(await readFile(path, "utf8")).toBe("content");
  });
});

describe("writeFilesAtomicInOrder", () => {
  it("renames in the given order: a crash before a later rename leaves the earlier files new and the later old", async () => {
    const dir = await tempDir();
    const [base, pending] = [join(dir, "base.json"), join(dir, "pending.json")];
    await writeFileAtomic(pending, "old pending");
    const renamed: string[] = [];
    const crash = writeFilesAtomicInOrder(
      [
        { path: base, data: "base" },
        { path: pending, data: "new pending" },
      ],
      {
        beforeRename: (temp) => {
          if (temp.includes("pending.json")) throw new Error("simulated crash");
          renamed.push(temp);
        },
      },
    );
    await expect(crash).rejects.toThrow("simulated crash");
    expect(renamed).toHaveLength(1);
    expect(await readFile(base, "utf8")).toBe("base");
    expect(await readFile(pending, "utf8")).toBe("old pending");
    await removeStaleTempFiles(dir);
    expect((await readdir(dir)).sort()).toEqual(["base.json", "pending.json"]);
  });

  it("renames nothing and leaves no temporary file when one of the files cannot be written", async () => {
    const dir = await tempDir();
    const inMissingDir = join(dir, "missing", "b.json");
    await expect(
      writeFilesAtomicInOrder([
        { path: join(dir, "a.json"), data: "a" },
        { path: inMissingDir, data: "b" },
      ]),
    ).rejects.toMatchObject({ code: "ENOENT" });
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("intoDir", () => {
  it("makes a missing directory (owner only) and writes; an existing one is written into as it is", async () => {
    const parent = await tempDir();
    const dir = join(parent, "groups", "g1");
    let attempts = 0;
    await intoDir(dir, () => {
      attempts++;
      return writeFileAtomic(join(dir, "group.json"), "one");
    });
    expect(attempts).toBe(2);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    attempts = 0;
    await intoDir(dir, () => {
      attempts++;
      return writeFileAtomic(join(dir, "group.json"), "two");
    });
    expect(attempts).toBe(1);
    expect(await readFile(join(dir, "group.json"), "utf8")).toBe("two");
  });

  it("passes any other failure on without making the directory", async () => {
    const dir = join(await tempDir(), "never");
    const failure = Object.assign(new Error("denied"), { code: "EACCES" });
    await expect(intoDir(dir, () => Promise.reject(failure))).rejects.toBe(failure);
    await expect(stat(dir)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("appendSync", () => {
  it("appends to a file that exists, and creates none", async () => {
    const dir = await tempDir();
    const path = join(dir, "history.jsonl");
    expect(appendSync(path, "\none")).toBe(false);
    expect(await readdir(dir)).toEqual([]);
    await writeFile(path, "start");
    expect(appendSync(path, "\none")).toBe(true);
    expect(appendSync(path, "\ntwo ✓")).toBe(true);
    expect(await readFile(path, "utf8")).toBe("start\none\ntwo ✓");
  });
});

describe("markers", () => {
  it("are replaced whole, owner only, and read back; a missing one reads as undefined", async () => {
    const dir = await tempDir();
    const path = join(dir, "generation");
    expect(readSmallFileSync(path)).toBeUndefined();
    writeMarkerSync(path, "first");
    writeMarkerSync(path, "second");
    expect(readSmallFileSync(path)?.toString("utf8")).toBe("second");
    // Written in place: a shorter content leaves nothing of the longer one behind.
    writeMarkerSync(path, "3rd");
    expect(readSmallFileSync(path)?.toString("utf8")).toBe("3rd");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["generation"]);
  });
});
