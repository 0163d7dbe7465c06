import { randomBytes } from "node:crypto";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { z } from "zod";
import { open, seal } from "../crypto/aead.js";
import {
  KEY_BYTES,
  SALT_BYTES,
  checkKdfParams,
  deriveKey,
  kdfParamsFor,
  passphraseBytes,
  type KdfParams,
  type KdfPolicy,
} from "../crypto/kdf.js";
import { ClientError } from "../errors.js";
import { StoreFormatError } from "./records.js";

// Encryption at rest of a device directory (format 2).
//
// `store-key.json` says how the directory is protected. With a passphrase it holds a random 256-bit
// data key wrapped (XChaCha20-Poly1305) under Argon2id(passphrase, salt); its header — format, version,
// KDF and its parameters, salt, AEAD — is the associated data of the wrap, so none of it can be changed
// without the unwrap failing. Every other file is sealed under the data key, with the file's kind, the
// format version and its path inside the directory as associated data: a file cannot be swapped for
// another one, nor moved to another group. Opting out (`protection: "none"`) is recorded there too.

export const STORE_KEY_FILE = "store-key.json";
export const STORE_FORMAT_VERSION = 2;
const AEAD = "xchacha20-poly1305" as const;

export type StoreProtection = { kind: "passphrase"; passphrase: string } | { kind: "none" };

export interface UnlockOptions extends KdfPolicy {
  passphrase?: string;
  /** Argon2id progress, 0…1 (it takes seconds). */
  onProgress?: (fraction: number) => void;
}

const b64 = z.string().regex(/^[A-Za-z0-9_-]*$/);

const StoreKeyFile = z.discriminatedUnion("protection", [
  z.object({ format: z.literal("mls-dm.store-key"), v: z.literal(2), protection: z.literal("none") }),
  z.object({
    format: z.literal("mls-dm.store-key"),
    v: z.literal(2),
    protection: z.literal("passphrase"),
    kdf: z.object({
      alg: z.literal("argon2id"),
      version: z.literal(0x13),
      m: z.number().int(),
      t: z.number().int(),
      p: z.number().int(),
      salt: b64,
    }),
    aead: z.literal(AEAD),
    nonce: b64,
    wrappedKey: b64,
  }),
]);
type StoreKeyFile = z.infer<typeof StoreKeyFile>;

/** How every file of format 2 is written and read. */
export interface StoreCipher {
  readonly protection: "passphrase" | "none";
  /** The file's content for `body` (a JSON object). */
  encodeRecord(format: string, relPath: string, body: object): string;
  /** The JSON body of a file read from `path`; throws StoreFormatError naming it. */
  decodeRecord(path: string, relPath: string, format: string, json: Record<string, unknown>): unknown;
  /** One line of an append-only file (history), without the newline. */
  encodeLine(relPath: string, entry: object): string;
  /** The entry of one line; undefined for a line that is not complete JSON (torn by a crash mid-append). */
  decodeLine(path: string, relPath: string, line: string, lineNo: number): unknown;
}

const utf8 = new TextEncoder();

function recordAad(format: string, relPath: string): Uint8Array {
  return utf8.encode(JSON.stringify(["mls-dm record", STORE_FORMAT_VERSION, format, relPath]));
}

function lineAad(relPath: string): Uint8Array {
  return utf8.encode(JSON.stringify(["mls-dm line", STORE_FORMAT_VERSION, relPath]));
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** `protection: "none"`: files are plain JSON, `{format, v, ...body}`, readable by the owner only. */
class PlainCipher implements StoreCipher {
  readonly protection = "none";

  encodeRecord(format: string, _relPath: string, body: object): string {
    return JSON.stringify({ format, v: STORE_FORMAT_VERSION, ...body });
  }

  decodeRecord(path: string, _relPath: string, _format: string, json: Record<string, unknown>): unknown {
    if ("ciphertext" in json) {
      throw new StoreFormatError(path, "is encrypted, but store-key.json says the directory is not");
    }
    const { format: _f, v: _v, ...body } = json;
    return body;
  }

  encodeLine(_relPath: string, entry: object): string {
    return JSON.stringify({ v: STORE_FORMAT_VERSION, entry });
  }

  decodeLine(path: string, _relPath: string, line: string, lineNo: number): unknown {
    const json = parseJson(line) as { v?: unknown; entry?: unknown } | undefined;
    if (json === undefined) return undefined;
    if (typeof json !== "object" || json === null || json.v !== STORE_FORMAT_VERSION) {
      throw new StoreFormatError(path, `line ${lineNo} is not a format-2 entry`);
    }
    return json.entry;
  }
}

/** Passphrase-protected: every file sealed under the data key. */
class SealedCipher implements StoreCipher {
  readonly protection = "passphrase";

  constructor(private readonly key: Uint8Array) {}

  /** The data key, for rewrapping it under a new passphrase (rewrapStoreKey); never leaves this module. */
  static dataKeyOf(cipher: SealedCipher): Uint8Array {
    return cipher.key;
  }

  encodeRecord(format: string, relPath: string, body: object): string {
    const { nonce, ciphertext } = seal(
      this.key,
      utf8.encode(JSON.stringify(body)),
      recordAad(format, relPath),
    );
    return JSON.stringify({
      format,
      v: STORE_FORMAT_VERSION,
      aead: AEAD,
      nonce: toBase64url(nonce),
      ciphertext: toBase64url(ciphertext),
    });
  }

  decodeRecord(path: string, relPath: string, format: string, json: Record<string, unknown>): unknown {
    const plain = this.openParts(json.nonce, json.ciphertext, json.aead, recordAad(format, relPath));
    if (plain === undefined) {
      throw new StoreFormatError(
        path,
        "does not decrypt: the file is damaged or was altered (or copied from elsewhere)",
      );
    }
    const body = parseJson(new TextDecoder().decode(plain));
    if (typeof body !== "object" || body === null) throw new StoreFormatError(path, "malformed content");
    return body;
  }

  encodeLine(relPath: string, entry: object): string {
    const { nonce, ciphertext } = seal(this.key, utf8.encode(JSON.stringify(entry)), lineAad(relPath));
    return JSON.stringify({
      v: STORE_FORMAT_VERSION,
      nonce: toBase64url(nonce),
      ciphertext: toBase64url(ciphertext),
    });
  }

  decodeLine(path: string, relPath: string, line: string, lineNo: number): unknown {
    const json = parseJson(line) as Record<string, unknown> | undefined;
    if (json === undefined) return undefined;
    const plain =
      typeof json === "object" && json !== null && json.v === STORE_FORMAT_VERSION
        ? this.openParts(json.nonce, json.ciphertext, AEAD, lineAad(relPath))
        : undefined;
    if (plain === undefined) {
      throw new StoreFormatError(path, `line ${lineNo} does not decrypt: the file is damaged or was altered`);
    }
    return parseJson(new TextDecoder().decode(plain));
  }

  private openParts(
    nonce: unknown,
    ciphertext: unknown,
    aead: unknown,
    aad: Uint8Array,
  ): Uint8Array | undefined {
    if (typeof nonce !== "string" || typeof ciphertext !== "string" || aead !== AEAD) return undefined;
    try {
      return open(this.key, fromBase64url(nonce), fromBase64url(ciphertext), aad);
    } catch {
      return undefined;
    }
  }
}

function wrapAad(file: Extract<StoreKeyFile, { protection: "passphrase" }>): Uint8Array {
  const k = file.kdf;
  return utf8.encode(
    JSON.stringify([
      file.format,
      file.v,
      file.protection,
      k.alg,
      k.version,
      k.m,
      k.t,
      k.p,
      k.salt,
      file.aead,
    ]),
  );
}

/** A new data key and the `store-key.json` content that protects it. */
export async function newStoreKey(
  protection: StoreProtection,
  policy: KdfPolicy,
  onProgress?: (fraction: number) => void,
): Promise<{ text: string; cipher: StoreCipher }> {
  if (protection.kind === "none") return { text: plainStoreKeyText(), cipher: new PlainCipher() };
  const dataKey = new Uint8Array(randomBytes(KEY_BYTES));
  const text = await wrapDataKey(dataKey, protection.passphrase, policy, onProgress);
  return { text, cipher: new SealedCipher(dataKey) };
}

/**
 * The `store-key.json` content that protects an unlocked directory as `protection` says from now on.
 * Passphrase → passphrase keeps the data key (fresh salt, fresh nonce, the policy's KDF parameters), so
 * `cipher` stays the cipher of every other file and none of them needs rewriting. Switching between
 * "none" and a passphrase changes how every file is written: the caller re-seals them (rekey.ts); a new
 * passphrase for a plain directory gets a new random data key (there is none to keep).
 */
export async function rewrapStoreKey(
  current: StoreCipher,
  protection: StoreProtection,
  policy: KdfPolicy,
  onProgress?: (fraction: number) => void,
): Promise<{ text: string; cipher: StoreCipher }> {
  if (protection.kind === "passphrase" && current instanceof SealedCipher) {
    const text = await wrapDataKey(
      SealedCipher.dataKeyOf(current),
      protection.passphrase,
      policy,
      onProgress,
    );
    return { text, cipher: current };
  }
  return newStoreKey(protection, policy, onProgress);
}

/**
 * How a file of format 2 was written, from its content alone (no key needed): "passphrase" for sealed
 * records and lines, "none" for plain ones, undefined when it cannot tell (not JSON, or no complete line).
 */
export function contentProtection(text: string): "passphrase" | "none" | undefined {
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const json = parseJson(line);
    if (typeof json !== "object" || json === null) continue; // a torn history line
    return "ciphertext" in json ? "passphrase" : "none";
  }
  return undefined;
}

function plainStoreKeyText(): string {
  const file: StoreKeyFile = { format: "mls-dm.store-key", v: 2, protection: "none" };
  return JSON.stringify(file);
}

/** `store-key.json` wrapping `dataKey` under Argon2id(passphrase, a fresh salt) with the policy's parameters. */
async function wrapDataKey(
  dataKey: Uint8Array,
  passphrase: string,
  policy: KdfPolicy,
  onProgress?: (fraction: number) => void,
): Promise<string> {
  const params: KdfParams = kdfParamsFor(policy);
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const kek = await deriveKey(passphraseBytes(passphrase), salt, params, onProgress);
  const header = {
    format: "mls-dm.store-key" as const,
    v: 2 as const,
    protection: "passphrase" as const,
    kdf: { alg: "argon2id" as const, version: 0x13 as const, ...params, salt: toBase64url(salt) },
    aead: AEAD,
  };
  const { nonce, ciphertext } = seal(kek, dataKey, wrapAad({ ...header, nonce: "", wrappedKey: "" }));
  const file: StoreKeyFile = { ...header, nonce: toBase64url(nonce), wrappedKey: toBase64url(ciphertext) };
  return JSON.stringify(file);
}

/** What `store-key.json` says, without unlocking anything. */
export function readProtection(path: string, text: string): "passphrase" | "none" {
  return parseStoreKey(path, text).protection;
}

function parseStoreKey(path: string, text: string): StoreKeyFile {
  const json = parseJson(text) as { format?: unknown; v?: unknown } | undefined;
  if (typeof json !== "object" || json === null || json.format !== "mls-dm.store-key") {
    throw new StoreFormatError(path, "is not an mls-dm store key file (the file is damaged)");
  }
  if (typeof json.v === "number" && json.v > STORE_FORMAT_VERSION) {
    throw new StoreFormatError(path, `was written by a newer version (format ${json.v}); upgrade mls-dm`);
  }
  const parsed = StoreKeyFile.safeParse(json);
  if (!parsed.success) throw new StoreFormatError(path, "is malformed (the file is damaged)");
  return parsed.data;
}

/** Unlocks a directory: derives the key from the passphrase and unwraps the data key. Writes nothing. */
export async function unlockStoreKey(path: string, text: string, opts: UnlockOptions): Promise<StoreCipher> {
  const file = parseStoreKey(path, text);
  if (file.protection === "none") return new PlainCipher();
  if (opts.passphrase === undefined) {
    throw new ClientError("passphrase_required", "this device directory is protected by a passphrase");
  }
  const { m, t, p } = file.kdf;
  checkKdfParams({ m, t, p }, opts, path);
  let salt: Uint8Array;
  let nonce: Uint8Array;
  let wrapped: Uint8Array;
  try {
    salt = fromBase64url(file.kdf.salt);
    nonce = fromBase64url(file.nonce);
    wrapped = fromBase64url(file.wrappedKey);
  } catch {
    throw new StoreFormatError(path, "is malformed (the file is damaged)");
  }
  if (salt.byteLength < SALT_BYTES) throw new StoreFormatError(path, "has a salt that is too short");
  const kek = await deriveKey(passphraseBytes(opts.passphrase), salt, { m, t, p }, opts.onProgress);
  const dataKey = open(kek, nonce, wrapped, wrapAad(file));
  if (dataKey === undefined || dataKey.byteLength !== KEY_BYTES) {
    throw new ClientError(
      "wrong_passphrase",
      "wrong passphrase (or store-key.json was altered): the device directory stays locked",
    );
  }
  return new SealedCipher(dataKey);
}
