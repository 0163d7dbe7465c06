import { bytesEqual, parseKeyPackage, type DeviceCertificate } from "@mastodon-mls/bridge";
import { ProtocolError, fromBase64url, type UploadKeyPackagesBody } from "@mastodon-mls/protocol";
import type { KeyPackageUpload, StoredKeyPackage } from "./store/directoryStore.js";

/** Whose KeyPackages an upload must hold: the token's account and the registered device's key. */
export interface UploadOwner {
  acct: string;
  sigKey: Uint8Array;
  /** Further checks of each KeyPackage's certificate (DIR-5 against the account's device list). */
  checkCertificate?: (cert: DeviceCertificate) => Promise<void>;
}

/**
 * Verifies every entry of an upload (DESIGN §5) before anything is stored; the first bad entry refuses
 * the whole upload, and the error names it (`field`, `index`).
 */
export async function verifyUpload(
  body: UploadKeyPackagesBody,
  owner: UploadOwner,
  now: number,
): Promise<KeyPackageUpload> {
  const keyPackages: StoredKeyPackage[] = [];
  for (const [index, text] of body.key_packages.entries()) {
    keyPackages.push(await located(verifyUploadEntry(text, owner, false, now), "key_packages", index));
  }
  const lastResort =
    body.last_resort === undefined
      ? undefined
      : await located(verifyUploadEntry(body.last_resort, owner, true, now), "last_resort");
  return { keyPackages, lastResort };
}

/** One base64url MLSMessage(KeyPackage): decoded strictly, verified by the bridge, then bound to its owner. */
export async function verifyUploadEntry(
  text: string,
  owner: UploadOwner,
  lastResort: boolean,
  now: number,
): Promise<StoredKeyPackage> {
  // The schema bounds the text; the bridge refuses more than LIMITS.keyPackageBytes with a precise reason.
  const bytes = fromBase64url(text);
  const kp = await parseKeyPackage(bytes, now);
  if (kp.acct !== owner.acct) {
    throw new ProtocolError("acct_mismatch", "The KeyPackage's credential names another account.");
  }
  if (!bytesEqual(kp.sigKey, owner.sigKey)) {
    throw new ProtocolError("device_mismatch", "The KeyPackage is signed by another device's key.");
  }
  await owner.checkCertificate?.(kp.certificate);
  if (kp.lastResort !== lastResort) {
    throw new ProtocolError(
      "invalid_key_package",
      lastResort
        ? "The last_resort KeyPackage lacks the last_resort extension."
        : "A KeyPackage with the last_resort extension belongs in the last_resort field.",
    );
  }
  // A claimant refuses a KeyPackage whose certificate has expired (KP-7), and the client uploads 90-day
  // KeyPackages in the last months of a one-year certificate: so it is served only while both are valid,
  // rather than refused at upload.
  return { ref: kp.ref, keyPackage: bytes, notAfter: Math.min(kp.notAfter, kp.certificate.notAfter) };
}

async function located<T>(work: Promise<T>, field: string, index?: number): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    const where = index === undefined ? field : `${field}[${index}]`;
    throw new ProtocolError(err.code, `${where}: ${err.message}`, {
      ...(err.details ?? {}),
      field,
      ...(index === undefined ? {} : { index }),
    });
  }
}
