import { mkdtemp, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { removeStaleTempFiles, writeFileAtomic } from "./atomicFile.js";

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
