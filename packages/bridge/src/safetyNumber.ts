import { sha512 } from "@noble/hashes/sha2.js";
import { formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import QRCode from "qrcode";
import { bytesEqual } from "./crypto.js";
import { TlsWriter } from "./tls.js";

// Safety numbers (DESIGN §3, rules SN-1…SN-3 in docs/identity.md), computed like Signal's numeric
// fingerprints: each party's half is an iterated SHA-512 over version ‖ account key ‖ acct, and the two
// halves are sorted so both people see the same 60 digits.

export interface SafetyParty {
  acct: string;
  accountKey: Uint8Array;
}

export interface SafetyNumber {
  /** 60 digits. */
  digits: string;
  /** 12 groups of 5 digits. */
  groups: string[];
  /** The groups separated by spaces, in three lines of four, as people read them aloud. */
  text: string;
  /** What the QR code holds. */
  qrPayload: string;
}

const VERSION = 1;
const ITERATIONS = 5200;
const QR_PREFIX = "MLSSN1:";

/** SN-1: one party's 30 digits. */
function half(party: SafetyParty): string {
  if (party.accountKey.byteLength !== 32) throw new RangeError("an account key is 32 bytes");
  const identity = new TextEncoder().encode(formatIdentity(parseAcct(party.acct)));
  let hash: Uint8Array = new TlsWriter().u16(VERSION).finish();
  hash = concat(hash, party.accountKey, identity);
  for (let i = 0; i < ITERATIONS; i++) hash = sha512(concat(hash, party.accountKey));
  let digits = "";
  for (let chunk = 0; chunk < 6; chunk++) {
    let value = 0;
    for (let b = 0; b < 5; b++) value = value * 256 + hash[chunk * 5 + b]!;
    digits += String(value % 100000).padStart(5, "0");
  }
  return digits;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** SN-2: the same number for both people, whoever computes it. */
export function safetyNumber(a: SafetyParty, b: SafetyParty): SafetyNumber {
  const halves = [half(a), half(b)].sort();
  const digits = halves.join("");
  const groups = digits.match(/.{5}/g)!;
  const lines = [0, 4, 8].map((i) => groups.slice(i, i + 4).join(" "));
  return { digits, groups, text: lines.join("\n"), qrPayload: QR_PREFIX + digits };
}

/** SN-4: the QR code of a safety number, drawn with block characters for a terminal. */
export function safetyNumberQr(number: SafetyNumber): Promise<string> {
  return QRCode.toString(number.qrPayload, { type: "utf8", errorCorrectionLevel: "M" });
}

/**
 * SN-3: compares what a person typed (spaces and dashes ignored) or a scanned QR payload with the number.
 * Anything that is not exactly 60 digits does not match.
 */
export function matchesSafetyNumber(number: SafetyNumber, input: string): boolean {
  let text = input.trim();
  if (text.toUpperCase().startsWith(QR_PREFIX)) text = text.slice(QR_PREFIX.length);
  text = text.replace(/[\s-]/g, "");
  if (!/^[0-9]{60}$/.test(text)) return false;
  return bytesEqual(new TextEncoder().encode(text), new TextEncoder().encode(number.digits));
}
