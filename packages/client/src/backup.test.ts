import { generateSigningKeyPair } from "@mastodon-mls/bridge";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  armorBackup,
  createAccountKeyBackup,
  dearmorBackup,
  formatRecoveryKey,
  inspectBackup,
  openAccountKeyBackup,
  openBackupBytes,
  parseRecoveryKey,
} from "./backup.js";
import { DEFAULT_KDF } from "./crypto/kdf.js";
import { ClientError } from "./errors.js";

// DESIGN §9 account-key backup. Every test but the one marked "real parameters" uses the cheap test KDF
// parameters (insecureTestKdf) so that fast-check can try hundreds of tampered files.

const TEST = { insecureTestKdf: true } as const;

async function sample(passphrase?: string) {
  const accountKey = await generateSigningKeyPair();
  const made = await createAccountKeyBackup({
    ...TEST,
    acct: "@Alice@A.test",
    accountKey,
    ...(passphrase === undefined ? {} : { passphrase }),
    createdAt: 1_800_000_000,
  });
  return { accountKey, ...made };
}

function codeOf(e: unknown): string | undefined {
  return e instanceof ClientError ? e.code : undefined;
}

describe("account-key backup", () => {
  it("round-trips with the generated recovery key, typed any way a person types it", async () => {
    const { accountKey, text, recoveryKey } = await sample();
    expect(recoveryKey).toMatch(/^([0-9A-HJKMNP-TV-Z]{4}-){8}[0-9A-HJKMNP-TV-Z]{4}$/);
    expect(inspectBackup(text)).toEqual({
      acct: "alice@a.test",
      createdAt: 1_800_000_000,
      protectedBy: "recovery-key",
      kdf: { m: 64, t: 1, p: 1 },
    });
    expect(text.split("\n")[0]).toBe(
      "mls-dm account key of alice@a.test, made 2027-01-15, protected by a recovery key. No messages or groups inside.",
    );
    const typed = recoveryKey!.toLowerCase().replace(/-/g, " ").replace(/0/g, "o").replace(/1/g, "l");
    const restored = await openAccountKeyBackup(text, typed, TEST);
    expect(restored.acct).toBe("alice@a.test");
    expect(restored.accountKey).toEqual(accountKey);
  });

  it("round-trips with a passphrase, and refuses a wrong one", async () => {
    const { accountKey, text, recoveryKey } = await sample("correct horse battery staple");
    expect(recoveryKey).toBeUndefined();
    expect(inspectBackup(text).protectedBy).toBe("passphrase");
    expect((await openAccountKeyBackup(text, "correct horse battery staple", TEST)).accountKey).toEqual(
      accountKey,
    );
    const wrong = await openAccountKeyBackup(text, "correct horse battery stapler", TEST).catch(
      (e: unknown) => e,
    );
    expect(codeOf(wrong)).toBe("wrong_backup_secret");
  });

  it("refuses to seal under a passphrase shorter than 8 characters, whoever calls it", async () => {
    // Found by an audit: only the CLI's prompt checked the length; the API sealed the account key under "x".
    for (const short of ["x", "1234567", "ééééééé"]) {
      expect(codeOf(await sample(short).catch((e: unknown) => e))).toBe("bad_input");
    }
    expect((await sample("12345678")).recoveryKey).toBeUndefined();
  });

  it("refuses another recovery key, and catches a mistyped character by its checksum", async () => {
    const { text, recoveryKey } = await sample();
    const other = formatRecoveryKey(new Uint8Array(20).fill(9));
    expect(codeOf(await openAccountKeyBackup(text, other, TEST).catch((e: unknown) => e))).toBe(
      "wrong_backup_secret",
    );
    const chars = recoveryKey!.replace(/-/g, "");
    fc.assert(
      fc.property(fc.nat(35), fc.constantFrom(..."0123456789ABCDEFGHJKMNPQRSTVWXYZ"), (i, c) => {
        fc.pre(chars[i] !== c);
        const typo = chars.slice(0, i) + c + chars.slice(i + 1);
        expect(() => parseRecoveryKey(typo)).toThrow(/checksum|not a recovery key/);
      }),
      { numRuns: 200 },
    );
  });

  it("rejects every single-byte change of the backup (binary form)", async () => {
    const { text, recoveryKey } = await sample();
    const bytes = dearmorBackup(text);
    await fc.assert(
      fc.asyncProperty(fc.nat(bytes.byteLength - 1), fc.integer({ min: 1, max: 255 }), async (i, delta) => {
        const changed = bytes.slice();
        changed[i] = (changed[i]! + delta) & 0xff;
        const e = await openBackupBytes(changed, recoveryKey!, TEST).catch((err: unknown) => err);
        expect(["bad_backup", "wrong_backup_secret"]).toContain(codeOf(e));
      }),
      { numRuns: 400 },
    );
    // and every position at least once
    for (let i = 0; i < bytes.byteLength; i++) {
      const changed = bytes.slice();
      changed[i] = changed[i]! ^ 0x01;
      const e = await openBackupBytes(changed, recoveryKey!, TEST).catch((err: unknown) => err);
      expect(["bad_backup", "wrong_backup_secret"], `byte ${i}`).toContain(codeOf(e));
    }
  });

  it("rejects every single-character change of the backup file (text form)", async () => {
    const { text, recoveryKey } = await sample();
    await fc.assert(
      fc.asyncProperty(fc.nat(text.length - 1), fc.integer({ min: 1, max: 126 }), async (i, code) => {
        const c = String.fromCharCode(code);
        fc.pre(text[i] !== c);
        const changed = text.slice(0, i) + c + text.slice(i + 1);
        const e = await openAccountKeyBackup(changed, recoveryKey!, TEST).catch((err: unknown) => err);
        expect(["bad_backup", "wrong_backup_secret"]).toContain(codeOf(e));
      }),
      { numRuns: 400 },
    );
    expect(armorBackup(dearmorBackup(text))).toBe(text);
    expect(() => dearmorBackup(text.replace(/\n/g, "\r\n"))).toThrow(/not a valid/);
    expect(() => dearmorBackup(`${text}\n`)).toThrow(/changed/);
  });

  it("refuses Argon2id parameters outside the accepted range before deriving anything", async () => {
    const { text, recoveryKey } = await sample();
    const bytes = dearmorBackup(text);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    view.setUint32(12, 4 * 1024 * 1024); // m = 4 GiB
    const started = Date.now();
    const e = await openBackupBytes(bytes, recoveryKey!, {}).catch((err: unknown) => err);
    expect(codeOf(e)).toBe("bad_backup");
    expect((e as Error).message).toMatch(/Argon2id parameters/);
    expect(Date.now() - started).toBeLessThan(1000);
    // Test parameters are refused by a normal (non-test) reader.
    const weak = await openAccountKeyBackup(text, recoveryKey!, {}).catch((err: unknown) => err);
    expect(codeOf(weak)).toBe("bad_backup");
  });

  it("with the real parameters (m = 64 MiB, t = 3, p = 4): seals and opens (two derivations, timed)", async () => {
    const accountKey = await generateSigningKeyPair();
    const t0 = performance.now();
    const made = await createAccountKeyBackup({ acct: "bob@b.test", accountKey });
    const sealMs = performance.now() - t0;
    expect(inspectBackup(made.text).kdf).toEqual(DEFAULT_KDF);
    const t1 = performance.now();
    const restored = await openAccountKeyBackup(made.text, made.recoveryKey!);
    const openMs = performance.now() - t1;
    expect(restored.accountKey).toEqual(accountKey);
    console.log(
      `Argon2id m=64MiB t=3 p=4 (@noble/hashes): seal ${sealMs.toFixed(0)} ms, open ${openMs.toFixed(0)} ms`,
    );
  }, 120_000);
});
