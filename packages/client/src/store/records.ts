import type { z } from "zod";
import { readFileIfExists, writeFileAtomic, type AtomicWriteHooks } from "./atomicFile.js";
import type { StoreCipher } from "./cipher.js";

// Every file of a device directory names what it holds and the version of its layout, so that a later
// release can migrate old files and an old release refuses files it does not understand.
//
//   format 1: plain JSON `{format, v: 1, ...body}` (the first release; `migrate` converts it)
//   format 2: sealed `{format, v: 2, aead, nonce, ciphertext}`, or plain `{format, v: 2, ...body}` in a
//             directory whose owner opted out of encryption (see cipher.ts)

export const FORMAT_VERSION = 2;
export const LEGACY_FORMAT_VERSION = 1;

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
  relPath: string,
  format: string,
  body: object,
  cipher: StoreCipher,
  hooks?: AtomicWriteHooks,
): Promise<void> {
  await writeFileAtomic(path, cipher.encodeRecord(format, relPath, body), hooks);
}

/** A record of `format`, or of any of `format` (a kind whose layout changed: the newest first). */
export async function readRecord<T>(
  path: string,
  relPath: string,
  format: string | readonly string[],
  schema: z.ZodType<T>,
  cipher: StoreCipher,
): Promise<T | undefined> {
  const bytes = await readFileIfExists(path);
  if (bytes === undefined) return undefined;
  const formats = typeof format === "string" ? [format] : format;
  const json = parseHead(path, undefined, bytes.toString("utf8"), FORMAT_VERSION);
  if (!formats.includes(json.format)) {
    throw new StoreFormatError(path, `not a ${formats[0]} file (the file is damaged or misplaced)`);
  }
  const body = cipher.decodeRecord(path, relPath, json.format, json);
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new StoreFormatError(path, `malformed: ${parsed.error.message}`);
  return parsed.data;
}

/** A format-1 file (plain JSON), for migration. */
export function parseLegacyRecord<T>(path: string, format: string, schema: z.ZodType<T>, text: string): T {
  const json = parseHead(path, format, text, LEGACY_FORMAT_VERSION);
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new StoreFormatError(path, `malformed: ${parsed.error.message}`);
  return parsed.data;
}

/**
 * A record file's JSON after checking its header: the `format` expected (any, when undefined: the file's
 * own kind is then `format` in the result) and the format version.
 */
export function parseHead(
  path: string,
  format: string | undefined,
  text: string,
  expected: number,
): Record<string, unknown> & { format: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new StoreFormatError(path, "not JSON (the file is damaged)");
  }
  const head = json as { format?: unknown; v?: unknown };
  if (typeof json !== "object" || json === null || typeof head.format !== "string") {
    throw new StoreFormatError(path, "is not an mls-dm file (the file is damaged)");
  }
  if (format !== undefined && head.format !== format) {
    throw new StoreFormatError(path, `not a ${format} file (the file is damaged or misplaced)`);
  }
  if (head.v !== expected) {
    throw new StoreFormatError(
      path,
      typeof head.v === "number" && head.v > expected
        ? `written by a newer version (format ${head.v}); upgrade mls-dm`
        : head.v === LEGACY_FORMAT_VERSION
          ? "format 1 (unencrypted, from an earlier release): run `mls-dm migrate` on this directory"
          : `unknown format version ${String(head.v)}`,
    );
  }
  return json as Record<string, unknown> & { format: string };
}
