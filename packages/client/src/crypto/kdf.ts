import { argon2id } from "hash-wasm";
import { ClientError } from "../errors.js";

// Argon2id (RFC 9106) from hash-wasm (the reference C implementation compiled to WebAssembly, about 7×
// faster than pure JavaScript: 0.3 s instead of 2.3–4.5 s per CLI command): the one way a passphrase or a recovery key becomes a key, for
// the device store and for the account-key backup alike (DESIGN §9). Parameters travel in each file's
// header so that they can be raised later without breaking old files; what a file may ask for is bounded
// both ways (too weak: refused; too costly: refused before any work, so a damaged header cannot stall us).

export interface KdfParams {
  /** Memory in KiB. */
  m: number;
  /** Passes. */
  t: number;
  /** Lanes. */
  p: number;
}

/** DESIGN §9: m = 64 MiB, t = 3, p = 4. About 0.3 s in hash-wasm on one core of the development machine. */
export const DEFAULT_KDF: Readonly<KdfParams> = Object.freeze({ m: 64 * 1024, t: 3, p: 4 });

/**
 * FOR TESTS ONLY: cheap parameters so that a test suite can create and open many stores and backups.
 * Only code that passes `insecureTestKdf: true` writes or accepts them; nothing else does.
 */
export const INSECURE_TEST_KDF: Readonly<KdfParams> = Object.freeze({ m: 64, t: 1, p: 1 });

export interface KdfPolicy {
  /** Accept (and write) only the cheap test parameters. Never set outside tests. */
  insecureTestKdf?: boolean;
}

const LIMITS = {
  normal: { min: DEFAULT_KDF, max: { m: 1024 * 1024, t: 16, p: 16 } },
  test: { min: { m: 8, t: 1, p: 1 }, max: { m: 1024, t: 4, p: 4 } },
};

export function kdfParamsFor(policy: KdfPolicy): KdfParams {
  return { ...(policy.insecureTestKdf === true ? INSECURE_TEST_KDF : DEFAULT_KDF) };
}

/** Throws unless `params` are within what this policy accepts from a file. `what` names the file. */
export function checkKdfParams(params: KdfParams, policy: KdfPolicy, what: string): void {
  const { min, max } = policy.insecureTestKdf === true ? LIMITS.test : LIMITS.normal;
  const ok =
    [params.m, params.t, params.p].every((n) => Number.isInteger(n)) &&
    params.t >= min.t &&
    params.t <= max.t &&
    params.p >= min.p &&
    params.p <= max.p &&
    params.m >= Math.max(min.m, 8 * params.p) &&
    params.m <= max.m;
  if (!ok) {
    throw new ClientError(
      "bad_key_derivation",
      `${what} asks for Argon2id parameters this client does not accept (m=${params.m} KiB, t=${params.t}, ` +
        `p=${params.p}); the file is damaged or was made by a test build`,
    );
  }
}

export const KEY_BYTES = 32;
export const SALT_BYTES = 16;

/**
 * Argon2id(secret, salt) → 32 bytes (version 0x13). One WebAssembly call of a fraction of a second, so
 * progress is reported only as done; the output is the same as any RFC 9106 implementation's (a test
 * checks it against @noble/hashes), so files written by earlier releases open unchanged.
 */
export async function deriveKey(
  secret: Uint8Array,
  salt: Uint8Array,
  params: KdfParams,
  onProgress?: (fraction: number) => void,
): Promise<Uint8Array> {
  const key = await argon2id({
    password: secret,
    salt,
    parallelism: params.p,
    iterations: params.t,
    memorySize: params.m,
    hashLength: KEY_BYTES,
    outputType: "binary",
  });
  onProgress?.(1);
  return key;
}

/** The bytes a passphrase stands for: UTF-8 of its NFKC form, so that the same text typed on another keyboard matches. */
export function passphraseBytes(passphrase: string): Uint8Array {
  if (passphrase.length === 0) throw new ClientError("bad_input", "the passphrase is empty");
  return new TextEncoder().encode(passphrase.normalize("NFKC"));
}
