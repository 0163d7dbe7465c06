import type { z } from "zod";
import { readFileIfExists, writeFileAtomic, type AtomicWriteHooks } from "./atomicFile.js";

// Every JSON file of a device directory names what it holds and the version of its layout, so a later
// release can migrate old files and an old release refuses files it does not understand.

export const FORMAT_VERSION = 1;

export class StoreFormatError extends Error {
  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`${path}: ${why}`);
    this.name = "StoreFormatError";
  }
}

export async function writeRecord(
  path: string,
  format: string,
  body: object,
  hooks?: AtomicWriteHooks,
): Promise<void> {
  await writeFileAtomic(path, JSON.stringify({ format, v: FORMAT_VERSION, ...body }), hooks);
}

export async function readRecord<T>(
  path: string,
  format: string,
  schema: z.ZodType<T>,
): Promise<T | undefined> {
  const bytes = await readFileIfExists(path);
  if (bytes === undefined) return undefined;
  return parseRecord(path, format, schema, bytes.toString("utf8"));
}

export function parseRecord<T>(path: string, format: string, schema: z.ZodType<T>, text: string): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new StoreFormatError(path, "not JSON (the file is damaged)");
  }
  const head = json as { format?: unknown; v?: unknown };
  if (typeof json !== "object" || json === null || head.format !== format) {
    throw new StoreFormatError(path, `not a ${format} file`);
  }
  if (head.v !== FORMAT_VERSION) {
    throw new StoreFormatError(
      path,
      typeof head.v === "number" && head.v > FORMAT_VERSION
        ? `written by a newer version (format ${head.v}); upgrade this client`
        : `unknown format version ${String(head.v)}`,
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new StoreFormatError(path, `malformed: ${parsed.error.message}`);
  return parsed.data;
}
