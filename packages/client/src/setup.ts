import { hostname } from "node:os";
import {
  addDevice,
  createDeviceList,
  deviceIdOf,
  decodeDeviceList,
  deviceIdText,
  generateSigningKeyPair,
  signDeviceList,
  signDeviceCertificate,
  verifyDeviceList,
  type SigningKeyPair,
  stripUnsafeNameChars,
} from "@mastodon-mls/bridge";
import { formatAcct, formatIdentity, fromBase64url, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { ClientError } from "./errors.js";
import { accountListPending, publishAccountList } from "./identity/accountList.js";
import { DevicePinStore } from "./identity/pins.js";
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
  /**
   * A Mastodon access token of that account with `read:accounts` (the directory checks it) and
   * `write:accounts` (the profile proof is published with it).
   */
  mastodonToken: string;
  /** Origin of the account's Mastodon API. Default: the resolver's development map, else https://<domain>. */
  mastodonUrl?: string;
  /** This device's name in the account's device list, as people see it. Default: the host name. */
  deviceName?: string;
  /**
   * Default true: publish the account's device list and profile proof (DESIGN §3) before registering.
   * false: register without them, as accounts did before device lists (docs/decisions.md D7; peers then
   * see `no-proof` and add this device only with `allowUnverified`). For stand-in services in tests and
   * instances whose profiles cannot be written; the directory refuses it once `DEVICE_LIST_REQUIRED`.
   */
  publishIdentity?: boolean;
  /**
   * The account already has an account key (a device list at its home directory) and this device starts
   * over with a new one: every device and the backup were lost. Contacts see `key-changed`. Default false:
   * set-up is refused with `account_key_exists`.
   */
  replaceAccountKey?: boolean;
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

/** At most 64 bytes of UTF-8 and no control characters (DL-7). */
export function deviceNameOf(name: string | undefined): string {
  const clean = stripUnsafeNameChars(name ?? hostname()).trim();
  let out = "";
  for (const ch of clean) {
    if (new TextEncoder().encode(out + ch).byteLength > 64) break;
    out += ch;
  }
  return out === "" ? "device" : out;
}

/**
 * A device of an account (DESIGN §3): on the first device a new account key; on a restored one the
 * account key from the backup. Then a device key, the certificate the first signs for the second, the
 * account's device list naming the device (version 1, or the next version of the list the home
 * directory serves, verified under the restored key), then — in this order, each step recorded when
 * done — the list to the home directory, the profile proof to Mastodon, registration, KeyPackages.
 * Every secret is on disk before anything that depends on it is sent.
 */
export async function setUpDevice(
  store: DeviceStore,
  opts: DeviceSetupOptions,
  home: ServiceUrls,
  restoredAccountKey?: SigningKeyPair,
  mastodonUrl?: string,
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
  const deviceKey = await newDeviceKey();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await certifyDevice(identity, accountKey, deviceKey.publicKey, now);
  const device = newDeviceRecord({
    acct: formatAcct(acct),
    deviceKey,
    accountKey,
    certificate,
    mastodonToken: opts.mastodonToken,
    home,
    keyPackages: count,
    now,
    mastodonUrl,
  });
  if (opts.publishIdentity === false) {
    await store.writeDevice(device);
    return completeSetup(store, device);
  }
  const name = deviceNameOf(opts.deviceName);
  let list: Uint8Array;
  let version: number;
  const served = (await new DirectoryClient(device.home.directory).accountDevices(device.acct)).device_list;
  if (served === null) {
    list = await createDeviceList({
      identity,
      accountKey,
      devices: [{ sigKey: deviceKey.publicKey, name }],
      now,
    });
    version = 1;
  } else if (restoredAccountKey === undefined) {
    // The account has a key already. Replacing it is the last resort of someone who lost every device
    // and the backup: their contacts then see key-changed, so it is never done without being asked.
    const old = decodeDeviceList(fromBase64url(served));
    if (opts.replaceAccountKey !== true) {
      throw new ClientError(
        "account_key_exists",
        `${device.acct} already has an account key (device list version ${old.version} at ` +
          `${home.directory}). Link this device from one of yours (mls-dm link-device), or restore a backup ` +
          "(mls-dm restore). Only if every device and the backup are lost: start over with a new account key " +
          "(mls-dm init --new-account-key); your contacts will then see key-changed until they check it with you.",
      );
    }
    // Only the version is taken from the old list: it is under the key being replaced (DIR-4, I5).
    version = old.version + 1;
    list = await signDeviceList(
      {
        identity,
        accountKey: accountKey.publicKey,
        version,
        devices: [
          { deviceId: deviceIdOf(deviceKey.publicKey), sigKey: deviceKey.publicKey, name, addedAt: now },
        ],
        issuedAt: now,
      },
      accountKey,
    );
  } else {
    // A restore: the next version of the account's list, which must be signed by the restored key.
    const decoded = decodeDeviceList(fromBase64url(served));
    let current;
    try {
      current = await verifyDeviceList(decoded, accountKey.publicKey, now);
    } catch {
      throw new ClientError(
        "device_list_conflict",
        `the device list ${home.directory} serves for ${device.acct} is not signed by the backup's account ` +
          "key: the account key was replaced after this backup was made",
      );
    }
    if (current.acct !== device.acct) {
      throw new ClientError("device_list_conflict", `the directory served the list of ${current.acct}`);
    }
    list = await addDevice(current, { sigKey: deviceKey.publicKey, name }, accountKey, now);
    version = current.version + 1;
  }
  device.accountList = { list: toBase64url(list), version, directoryVersion: 0, profileVersion: 0 };
  await store.writeDevice(device);
  // Our own key, pinned: a home admin swapping it shows as key-changed on our own devices too.
  await (
    await DevicePinStore.load(store)
  ).set(device.acct, {
    accountKey: accountKey.publicKey,
    oobVerified: false,
    pinnedAt: now,
  });
  return completeSetup(store, device);
}

/**
 * A device's signature key. Its id (base64url SHA-256) is typed on command lines, where one starting with
 * "-" would read as an option: such keys (1 in 64) are not used.
 */
export async function newDeviceKey(): Promise<SigningKeyPair> {
  for (;;) {
    const key = await generateSigningKeyPair();
    if (!deviceIdText(key.publicKey).startsWith("-")) return key;
  }
}

/** A certificate for `sigKey` under the account key: backdated a little, valid for a year. */
export function certifyDevice(
  identity: string,
  accountKey: SigningKeyPair,
  sigKey: Uint8Array,
  now: number,
): Promise<Uint8Array> {
  return signDeviceCertificate(
    {
      identity,
      accountKey: accountKey.publicKey,
      sigKey,
      notBefore: now - BACKDATE_SECONDS,
      notAfter: now - BACKDATE_SECONDS + CERTIFICATE_VALIDITY_SECONDS,
    },
    accountKey.signKey,
  );
}

/** device.json of a device not yet registered: no KeyPackages, no list published. */
export function newDeviceRecord(p: {
  acct: string;
  deviceKey: SigningKeyPair;
  /** null on a linked device: the account key stays on the device that linked it (DESIGN §3). */
  accountKey: SigningKeyPair | null;
  certificate: Uint8Array;
  mastodonToken: string;
  home: ServiceUrls;
  keyPackages: number;
  now: number;
  mastodonUrl: string | undefined;
}): DeviceRecord {
  return {
    acct: p.acct,
    identity: formatIdentity(parseAcct(p.acct)),
    deviceId: deviceIdText(p.deviceKey.publicKey),
    deviceKey: { publicKey: toBase64url(p.deviceKey.publicKey), signKey: toBase64url(p.deviceKey.signKey) },
    accountKey:
      p.accountKey === null
        ? null
        : { publicKey: toBase64url(p.accountKey.publicKey), signKey: toBase64url(p.accountKey.signKey) },
    certificate: toBase64url(p.certificate),
    mastodonToken: p.mastodonToken,
    home: { directory: checkServiceUrl(p.home.directory), delivery: checkServiceUrl(p.home.delivery) },
    keyPackageTarget: p.keyPackages,
    lastResort: { ref: "", used: false },
    addedKeyPackages: {},
    createdAt: p.now,
    ...(p.mastodonUrl === undefined ? {} : { mastodonUrl: p.mastodonUrl }),
  };
}

/**
 * The device set-up is complete once its account's list is published (directory and profile) and it has
 * a last-resort KeyPackage on record.
 */
export function setupComplete(device: DeviceRecord): boolean {
  return device.lastResort.ref !== "" && !accountListPending(device);
}

/**
 * Publishes the account's device list (directory, then profile proof), registers the device and
 * publishes its KeyPackages. Every step is idempotent or recorded once done, so a set-up cut short
 * (network, crash, a token without the scope) is finished by running this again — `MlsDmClient.open` does.
 * The directory refuses a registration not in the list once the account has one: the list goes first.
 */
export async function completeSetup(store: DeviceStore, start: DeviceRecord): Promise<DeviceRecord> {
  const device = await publishAccountList(store, start);
  if (device.lastResort.ref !== "") return device;
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
