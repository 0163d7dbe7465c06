import {
  deviceIdText,
  generateSigningKeyPair,
  signDeviceCertificate,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { formatAcct, formatIdentity, fromBase64url, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { ClientError } from "./errors.js";
import { publishKeyPackages } from "./keyPackages.js";
import type { KdfPolicy } from "./crypto/kdf.js";
import type { StoreProtection } from "./store/cipher.js";
import type { DeviceStore } from "./store/deviceStore.js";
import type { DeviceRecord } from "./store/schemas.js";
import { DirectoryClient } from "./transport/directoryClient.js";
import type { ServiceResolver, ServiceUrls } from "./transport/resolver.js";
import { checkServiceUrl } from "./transport/serviceUrl.js";

/** A device certificate is renewed by re-linking (later issue); a year bounds a lost device key. */
export const CERTIFICATE_VALIDITY_SECONDS = 365 * 24 * 3600;
/** Accepts a peer whose clock runs a little behind. */
const BACKDATE_SECONDS = 300;
export const DEFAULT_KEY_PACKAGES = 20;

/** What setting up a device needs besides its directory. */
export interface DeviceSetupOptions {
  /** The account, e.g. "alice@a.test" or "@alice@a.test". */
  acct: string;
  /** A Mastodon access token of that account (scope `read:accounts` at least): the directory checks it. */
  mastodonToken: string;
  /** Where services live: a resolver, or this instance's own two URLs. */
  services: ServiceResolver | ServiceUrls;
  /** KeyPackages to upload (besides the last-resort one). Default 20. */
  keyPackages?: number;
}

export interface CreateDeviceOptions extends DeviceSetupOptions, KdfPolicy {
  dir: string;
  /**
   * How the directory's secrets are kept: under a passphrase (Argon2id, XChaCha20-Poly1305), or — the
   * owner's explicit choice — in plain files readable by the owner only.
   */
  protection: StoreProtection;
  /** Argon2id progress, 0…1. */
  onProgress?: (fraction: number) => void;
}

/**
 * A device of an account (DESIGN §3): on the first device a new account key; on a restored one the
 * account key from the backup. Then a device key, the certificate the first signs for the second,
 * registration with the home directory, KeyPackages. Every secret is on disk before anything that
 * depends on it is sent.
 */
export async function setUpDevice(
  store: DeviceStore,
  opts: DeviceSetupOptions,
  home: ServiceUrls,
  restoredAccountKey?: SigningKeyPair,
): Promise<DeviceRecord> {
  const acct = parseAcct(opts.acct);
  const count = opts.keyPackages ?? DEFAULT_KEY_PACKAGES;
  if (!Number.isInteger(count) || count < 1)
    throw new ClientError("bad_input", "keyPackages must be at least 1");
  if (await store.hasDevice()) {
    throw new ClientError("device_exists", `${store.dir} already holds a device; open it instead`);
  }
  const identity = formatIdentity(acct);
  const accountKey = restoredAccountKey ?? (await generateSigningKeyPair());
  const deviceKey = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: accountKey.publicKey,
      sigKey: deviceKey.publicKey,
      notBefore: now - BACKDATE_SECONDS,
      notAfter: now - BACKDATE_SECONDS + CERTIFICATE_VALIDITY_SECONDS,
    },
    accountKey.signKey,
  );
  const device: DeviceRecord = {
    acct: formatAcct(acct),
    identity,
    deviceId: deviceIdText(deviceKey.publicKey),
    deviceKey: { publicKey: toBase64url(deviceKey.publicKey), signKey: toBase64url(deviceKey.signKey) },
    accountKey: { publicKey: toBase64url(accountKey.publicKey), signKey: toBase64url(accountKey.signKey) },
    certificate: toBase64url(certificate),
    mastodonToken: opts.mastodonToken,
    home: { directory: checkServiceUrl(home.directory), delivery: checkServiceUrl(home.delivery) },
    keyPackageTarget: count,
    lastResort: { ref: "", used: false },
    addedKeyPackages: {},
    createdAt: now,
  };
  await store.writeDevice(device);
  return completeSetup(store, device);
}

/** The device set-up is complete once it has a last-resort KeyPackage on record. */
export function setupComplete(device: DeviceRecord): boolean {
  return device.lastResort.ref !== "";
}

/**
 * Registers the device and publishes its KeyPackages. Registration is an idempotent PUT, so a set-up cut
 * short (network, crash) is finished by running this again — `MlsDmClient.open` does.
 */
export async function completeSetup(store: DeviceStore, device: DeviceRecord): Promise<DeviceRecord> {
  const certificate = fromBase64url(device.certificate);
  const directory = new DirectoryClient(device.home.directory);
  await directory.registerDevice(device.deviceId, certificate, device.mastodonToken);
  const src = {
    identity: device.identity,
    signatureKeyPair: {
      publicKey: fromBase64url(device.deviceKey.publicKey),
      signKey: fromBase64url(device.deviceKey.signKey),
    },
    certificate,
  };
  const { lastResortRef } = await publishKeyPackages(
    store,
    directory,
    device,
    src,
    device.keyPackageTarget,
    true,
  );
  const done = { ...device, lastResort: { ref: lastResortRef!, used: false } };
  await store.writeDevice(done);
  return done;
}

export function isResolver(s: ServiceResolver | ServiceUrls): s is ServiceResolver {
  return typeof (s as ServiceResolver).resolve === "function";
}
