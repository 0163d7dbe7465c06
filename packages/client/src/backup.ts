import { randomBytes } from "node:crypto";
import { sha256, signLabeled, verifyLabeled, type SigningKeyPair } from "@mastodon-mls/bridge";
import { formatAcct, parseAcct } from "@mastodon-mls/protocol";
import { NONCE_BYTES, open, sealWithNonce } from "./crypto/aead.js";
import {
  SALT_BYTES,
  checkKdfParams,
  deriveKey,
  kdfParamsFor,
  passphraseBytes,
  type KdfParams,
  type KdfPolicy,
} from "./crypto/kdf.js";
import { ClientError } from "./errors.js";

// Backup of the ACCOUNT KEY ONLY (DESIGN §9). Never group state: restoring a group state on another
// device would reuse its key generations (nonces). A restored account key signs a NEW device's
// certificate; the new device is added to groups like any other.
//
// Binary form (big-endian), everything before `ciphertext` being the header and the associated data of
// XChaCha20-Poly1305 (so the acct is bound too):
//
//   magic "MLSDMAKB" (8) | version u16 = 1 | secret kind u8 (1 recovery key, 2 passphrase)
//   | kdf u8 (1 = Argon2id v1.3) | m u32 (KiB) | t u32 | p u32 | salt (16) | nonce (24)
//   | acct length u16 | acct (UTF-8 user@domain) | created_at u64 (Unix seconds)
//   | ciphertext length u16 | ciphertext
//
// plaintext: scheme u16 (0x0807 Ed25519) | sign key length u8 | sign key | public key length u8 | public key
//
// The key is Argon2id(secret, salt) with the header's parameters (DESIGN §9: m = 64 MiB, t = 3, p = 4).
// The secret is a generated recovery key (160 random bits) by default, or the user's passphrase.
// The file is that binary in base64url between BEGIN/END lines, after one line describing it; reading
// insists on the exact canonical text, so no byte of the file can change without the backup being refused.

const MAGIC = new TextEncoder().encode("MLSDMAKB");
const VERSION = 1;
const KDF_ARGON2ID = 1;
const SCHEME_ED25519 = 0x0807;
const BEGIN = "-----BEGIN MLS-DM ACCOUNT KEY BACKUP-----";
const END = "-----END MLS-DM ACCOUNT KEY BACKUP-----";
const MAX_KEY_BYTES = 128;
/** A chosen passphrase's minimum (the CLI asks the same of every new passphrase). */
export const MIN_PASSPHRASE_CHARS = 8;

export type BackupProtection = "recovery-key" | "passphrase";

export interface BackupInfo {
  acct: string;
  createdAt: number;
  protectedBy: BackupProtection;
  kdf: KdfParams;
}

export interface RestoredAccountKey extends BackupInfo {
  accountKey: SigningKeyPair;
}

interface Parsed extends BackupInfo {
  salt: Uint8Array;
  nonce: Uint8Array;
  header: Uint8Array;
  ciphertext: Uint8Array;
}

// ---- recovery keys ----

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RECOVERY_BYTES = 20;

function base32(bytes: Uint8Array, chars: number): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += CROCKFORD[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += CROCKFORD[(value << (5 - bits)) & 31];
  return out.slice(0, chars);
}

function recoveryChecksum(bytes: Uint8Array): string {
  return base32(sha256(new Uint8Array([...new TextEncoder().encode("mls-dm recovery key"), ...bytes])), 4);
}

/** 160 random bits as 32 Crockford base32 characters and a 4-character checksum, in 9 groups of 4. */
export function generateRecoveryKey(): { bytes: Uint8Array; text: string } {
  const bytes = new Uint8Array(randomBytes(RECOVERY_BYTES));
  return { bytes, text: formatRecoveryKey(bytes) };
}

export function formatRecoveryKey(bytes: Uint8Array): string {
  const chars = base32(bytes, 32) + recoveryChecksum(bytes);
  return chars.match(/.{4}/g)!.join("-");
}

/** Reads a recovery key as people type it: any case, with or without dashes or spaces, O for 0, I or L for 1. */
export function parseRecoveryKey(text: string): Uint8Array {
  const chars = text.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
  if (chars.length !== 36 || [...chars].some((c) => !CROCKFORD.includes(c))) {
    throw new ClientError(
      "wrong_backup_secret",
      "that is not a recovery key (36 characters in 9 groups of 4)",
    );
  }
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const c of chars.slice(0, 32)) {
    value = (value << 5) | CROCKFORD.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
      value &= (1 << bits) - 1;
    }
  }
  const out = new Uint8Array(bytes);
  if (recoveryChecksum(out) !== chars.slice(32)) {
    throw new ClientError(
      "wrong_backup_secret",
      "the recovery key's checksum does not match: a character is mistyped",
    );
  }
  return out;
}

// ---- encoding ----

class Writer {
  private readonly parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v >>> 8).u8(v);
  }
  u32(v: number): this {
    return this.u16(v >>> 16).u16(v & 0xffff);
  }
  u64(v: number): this {
    return this.u32(Math.floor(v / 2 ** 32)).u32(v >>> 0);
  }
  bytes(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  finish(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

class Reader {
  offset = 0;
  constructor(private readonly buf: Uint8Array) {}
  private need(n: number): void {
    if (this.offset + n > this.buf.byteLength) throw bad("it is truncated");
  }
  u8(): number {
    this.need(1);
    return this.buf[this.offset++]!;
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  u32(): number {
    return this.u16() * 0x10000 + this.u16();
  }
  u64(): number {
    const hi = this.u32();
    const lo = this.u32();
    if (hi >= 2 ** 21) throw bad("the date is out of range");
    return hi * 2 ** 32 + lo;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.slice(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
  done(): boolean {
    return this.offset === this.buf.byteLength;
  }
}

function bad(why: string): ClientError {
  return new ClientError("bad_backup", `not a valid mls-dm account-key backup: ${why}`);
}

function encodeHeader(h: Omit<Parsed, "header" | "ciphertext">): Uint8Array {
  const acct = new TextEncoder().encode(h.acct);
  return new Writer()
    .bytes(MAGIC)
    .u16(VERSION)
    .u8(h.protectedBy === "recovery-key" ? 1 : 2)
    .u8(KDF_ARGON2ID)
    .u32(h.kdf.m)
    .u32(h.kdf.t)
    .u32(h.kdf.p)
    .bytes(h.salt)
    .bytes(h.nonce)
    .u16(acct.byteLength)
    .bytes(acct)
    .u64(h.createdAt)
    .finish();
}

export function decodeBackup(bytes: Uint8Array): Parsed {
  const r = new Reader(bytes);
  const magic = r.bytes(MAGIC.byteLength);
  if (!magic.every((b, i) => b === MAGIC[i])) throw bad("it does not start like one");
  const version = r.u16();
  if (version !== VERSION) throw bad(`unknown version ${version}`);
  const kind = r.u8();
  if (kind !== 1 && kind !== 2) throw bad("unknown kind of secret");
  if (r.u8() !== KDF_ARGON2ID) throw bad("unknown key derivation");
  const kdf = { m: r.u32(), t: r.u32(), p: r.u32() };
  const salt = r.bytes(SALT_BYTES);
  const nonce = r.bytes(NONCE_BYTES);
  const acctBytes = r.bytes(r.u16());
  let acct: string;
  try {
    acct = new TextDecoder("utf-8", { fatal: true }).decode(acctBytes);
    if (formatAcct(parseAcct(acct)) !== acct) throw new Error("not canonical");
  } catch {
    throw bad("the account is not a canonical user@domain");
  }
  const createdAt = r.u64();
  const headerEnd = r.offset;
  const ciphertext = r.bytes(r.u16());
  if (!r.done()) throw bad("it has trailing bytes");
  return {
    acct,
    createdAt,
    protectedBy: kind === 1 ? "recovery-key" : "passphrase",
    kdf,
    salt,
    nonce,
    header: bytes.slice(0, headerEnd),
    ciphertext,
  };
}

function encodeBackup(p: Parsed): Uint8Array {
  return new Writer().bytes(p.header).u16(p.ciphertext.byteLength).bytes(p.ciphertext).finish();
}

function describe(info: BackupInfo): string {
  const date = new Date(info.createdAt * 1000).toISOString().slice(0, 10);
  const by = info.protectedBy === "recovery-key" ? "a recovery key" : "a passphrase";
  return `mls-dm account key of ${info.acct}, made ${date}, protected by ${by}. No messages or groups inside.`;
}

/** The file's text: one line describing it, then the binary in base64url between BEGIN/END lines. */
export function armorBackup(bytes: Uint8Array): string {
  const info = decodeBackup(bytes);
  const b64 = Buffer.from(bytes).toString("base64url");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `${describe(info)}\n${BEGIN}\n${lines.join("\n")}\n${END}\n`;
}

/** The binary of a backup file; only the exact text `armorBackup` writes is accepted. */
export function dearmorBackup(text: string): Uint8Array {
  const lines = text.split("\n");
  const begin = lines.indexOf(BEGIN);
  const end = lines.indexOf(END);
  if (begin < 0 || end < begin) throw bad("no BEGIN/END lines");
  const b64 = lines.slice(begin + 1, end).join("");
  if (!/^[A-Za-z0-9_-]+$/.test(b64)) throw bad("the content is not base64url");
  const bytes = new Uint8Array(Buffer.from(b64, "base64url"));
  let canonical: string;
  try {
    canonical = armorBackup(bytes);
  } catch (e) {
    throw e instanceof ClientError ? e : bad("it does not decode");
  }
  if (canonical !== text) throw bad("the file has been changed (it is not exactly as written)");
  return bytes;
}

/** What a backup says about itself, before any secret is asked for. */
export function inspectBackup(text: string): BackupInfo {
  const { acct, createdAt, protectedBy, kdf } = decodeBackup(dearmorBackup(text));
  return { acct, createdAt, protectedBy, kdf };
}

function encodePlaintext(key: SigningKeyPair): Uint8Array {
  return new Writer()
    .u16(SCHEME_ED25519)
    .u8(key.signKey.byteLength)
    .bytes(key.signKey)
    .u8(key.publicKey.byteLength)
    .bytes(key.publicKey)
    .finish();
}

function decodePlaintext(bytes: Uint8Array): SigningKeyPair {
  const r = new Reader(bytes);
  if (r.u16() !== SCHEME_ED25519) throw bad("unknown key type");
  const signKey = r.bytes(r.u8());
  const publicKey = r.bytes(r.u8());
  if (!r.done() || signKey.byteLength > MAX_KEY_BYTES || publicKey.byteLength !== 32)
    throw bad("malformed key");
  return { signKey, publicKey };
}

function secretBytes(kind: BackupProtection, secret: string): Uint8Array {
  return kind === "recovery-key" ? parseRecoveryKey(secret) : passphraseBytes(secret);
}

export interface CreateBackupOptions extends KdfPolicy {
  acct: string;
  accountKey: SigningKeyPair;
  /** Protect with this passphrase instead of a generated recovery key. */
  passphrase?: string;
  /** Unix seconds; default now. */
  createdAt?: number;
  onProgress?: (fraction: number) => void;
}

/** Seals the account key. Returns the file's text and, unless a passphrase was given, the recovery key (show it once). */
export async function createAccountKeyBackup(
  opts: CreateBackupOptions,
): Promise<{ text: string; recoveryKey?: string }> {
  // The account key is the crown jewel: a chosen passphrase has the CLI's minimum length here too, so no
  // caller (the environment variable, another app on the library) seals it under "x".
  if (opts.passphrase !== undefined && [...opts.passphrase].length < MIN_PASSPHRASE_CHARS) {
    throw new ClientError(
      "bad_input",
      `a backup passphrase has at least ${MIN_PASSPHRASE_CHARS} characters; nothing was written`,
    );
  }
  const recovery = opts.passphrase === undefined ? generateRecoveryKey() : undefined;
  const protectedBy: BackupProtection = recovery === undefined ? "passphrase" : "recovery-key";
  const secret = recovery?.bytes ?? passphraseBytes(opts.passphrase!);
  const kdf = kdfParamsFor(opts);
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  const fields = {
    acct: formatAcct(parseAcct(opts.acct)),
    createdAt: opts.createdAt ?? Math.floor(Date.now() / 1000),
    protectedBy,
    kdf,
    salt,
    nonce,
  };
  const header = encodeHeader(fields);
  const key = await deriveKey(secret, salt, kdf, opts.onProgress);
  const ciphertext = sealWithNonce(key, nonce, encodePlaintext(opts.accountKey), header);
  const bytes = encodeBackup({ ...fields, header, ciphertext });
  return { text: armorBackup(bytes), ...(recovery === undefined ? {} : { recoveryKey: recovery.text }) };
}

/**
 * Opens a backup with its recovery key or passphrase (whichever it says it needs). Refuses anything but
 * the exact file as written, KDF parameters outside the accepted range (before doing any work), and a
 * key pair whose halves do not match.
 */
export async function openAccountKeyBackup(
  text: string,
  secret: string,
  opts: KdfPolicy & { onProgress?: (fraction: number) => void } = {},
): Promise<RestoredAccountKey> {
  return openBackupBytes(dearmorBackup(text), secret, opts);
}

export async function openBackupBytes(
  bytes: Uint8Array,
  secret: string,
  opts: KdfPolicy & { onProgress?: (fraction: number) => void } = {},
): Promise<RestoredAccountKey> {
  const p = decodeBackup(bytes);
  try {
    checkKdfParams(p.kdf, opts, "the backup");
  } catch (e) {
    throw bad(e instanceof Error ? e.message : String(e));
  }
  const key = await deriveKey(secretBytes(p.protectedBy, secret), p.salt, p.kdf, opts.onProgress);
  const plain = open(key, p.nonce, p.ciphertext, p.header);
  if (plain === undefined) {
    throw new ClientError(
      "wrong_backup_secret",
      `the ${p.protectedBy === "recovery-key" ? "recovery key" : "passphrase"} does not open this backup ` +
        "(wrong secret, or the file was altered)",
    );
  }
  const accountKey = decodePlaintext(plain);
  const probe = new TextEncoder().encode("mls-dm backup check");
  const sig = await signLabeled(accountKey.signKey, "mastodon-mls backup check v1", probe);
  if (!(await verifyLabeled(accountKey.publicKey, "mastodon-mls backup check v1", probe, sig))) {
    throw bad("the key pair inside does not match");
  }
  return { acct: p.acct, createdAt: p.createdAt, protectedBy: p.protectedBy, kdf: p.kdf, accountKey };
}
