import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";

/** Every file and directory under `dir`: mode, size, modification time and content hash. */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      const r = rel === "" ? entry.name : `${rel}/${entry.name}`;
      const s = await stat(path);
      if (entry.isDirectory()) {
        out[`${r}/`] = `dir ${(s.mode & 0o777).toString(8)} ${s.mtimeMs}`;
        await walk(path, r);
      } else {
        const hash = createHash("sha256")
          .update(await readFile(path))
          .digest("hex");
        out[r] = `file ${(s.mode & 0o777).toString(8)} ${s.size} ${s.mtimeMs} ${hash}`;
      }
    }
  };
  await walk(dir, "");
  return out;
}

/** All files under `dir` with their bytes. */
export async function allFiles(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (d: string) => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) await walk(path);
      else out.set(path, await readFile(path));
    }
  };
  await walk(dir);
  return out;
}
