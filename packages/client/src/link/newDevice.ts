import {
  MemoryPinStore,
  bytesEqual,
  decodeDeviceList,
  deviceIdText,
  findDevice,
  parseDeviceCertificate,
  verifyDeviceList,
  type DeviceCertificate,
} from "@mastodon-mls/bridge";
import { canonicalAcct, fromBase64url, parseAcct, toBase64url } from "@mastodon-mls/protocol";
import { ClientError, ServiceUnavailableError } from "../errors.js";
import { DevicePinStore } from "../identity/pins.js";
import { MemberVerifier, type IdentityOptions } from "../identity/verifier.js";
import {
  DEFAULT_KEY_PACKAGES,
  completeSetup,
  deviceNameOf,
  newDeviceKey,
  newDeviceRecord,
} from "../setup.js";
import type { DeviceStore } from "../store/deviceStore.js";
import type { DeviceRecord, PendingLinkRecord } from "../store/schemas.js";
import { DirectoryClient } from "../transport/directoryClient.js";
import type { ServiceResolver, ServiceUrls } from "../transport/resolver.js";
import { checkServiceUrl } from "../transport/serviceUrl.js";
import { LINK_CODE_MAX_AGE_SECONDS, confirmationCode, encodeLinkCode, type LinkRequestTbs } from "./code.js";
import { pause } from "../util/pause.js";

// The new device's half of linking (docs/protocol.md "Linking a device"): make a key and show it as a
// link code; then wait until a device holding the account key has certified it — the certificate appears
// among the account's registrations at the home directory — and trust it only once the account's profile
// proof vouches for the key that signed it (LNK-7…LNK-9). Nothing is registered by this device before.

export interface PendingLink {
  acct: string;
  deviceId: string;
  /** The text to copy (or the QR code's content). */
  code: string;
  /** Shown on both devices; the approving one types it. */
  confirmation: string;
  createdAt: number;
}

export interface LinkSetupOptions {
  /** The account, `user@domain` (the Mastodon token's). */
  acct: string;
  mastodonToken: string;
  /** Origin of the account's Mastodon API; default the resolver's development map, else https://<domain>. */
  mastodonUrl?: string;
  deviceName?: string;
  /** KeyPackages to upload once linked (besides the last-resort one). Default 20. */
  keyPackages?: number;
}

const pendingOf = (rec: PendingLinkRecord): LinkRequestTbs => ({
  acct: rec.acct,
  sigKey: fromBase64url(rec.deviceKey.publicKey),
  name: rec.name,
  createdAt: rec.createdAt,
});

/**
 * Starts linking in an empty device store, or resumes it: the device key is made once and kept (sealed)
 * in link.json, so a restarted `link-device` shows the same key; the code is renewed when it is too old
 * to be approved.
 */
export async function beginLink(
  store: DeviceStore,
  opts: LinkSetupOptions,
  now: number,
): Promise<PendingLink> {
  const acct = canonicalAcct(opts.acct);
  if (await store.hasDevice()) {
    throw new ClientError(
      "device_exists",
      `${store.dir} already holds a device; link from another directory`,
    );
  }
  let rec = await store.readLink();
  if (rec !== undefined && rec.acct !== acct) {
    throw new ClientError(
      "device_exists",
      `${store.dir} is linking a device of ${rec.acct}, not ${acct}; use another directory`,
    );
  }
  if (rec === undefined) {
    const key = await newDeviceKey();
    rec = {
      acct,
      deviceKey: { publicKey: toBase64url(key.publicKey), signKey: toBase64url(key.signKey) },
      name: deviceNameOf(opts.deviceName),
      createdAt: now,
    };
    await store.writeLink(rec);
  } else if (now - rec.createdAt > LINK_CODE_MAX_AGE_SECONDS - 120) {
    rec = {
      ...rec,
      createdAt: now,
      ...(opts.deviceName === undefined ? {} : { name: deviceNameOf(opts.deviceName) }),
    };
    await store.writeLink(rec);
  }
  const tbs = pendingOf(rec);
  return {
    acct,
    deviceId: deviceIdText(tbs.sigKey),
    code: encodeLinkCode(tbs),
    confirmation: confirmationCode(tbs),
    createdAt: rec.createdAt,
  };
}

export interface WaitOptions {
  /** Give up after this long (ms). */
  timeoutMs: number;
  /** How often to ask the directory (ms). Default 2 s. */
  pollMs?: number;
  signal?: AbortSignal;
  /** Called after each look that found nothing usable yet, with why. */
  onWaiting?: (why: string) => void;
  identity?: IdentityOptions;
}

interface Found {
  certificate: DeviceCertificate;
  bytes: Uint8Array;
}

/**
 * One look at the home directory: this device's certificate, if registered, verified offline (LNK-7),
 * by a key the account's verified profile names, in the list that the profile's version names and that
 * lists this very key (LNK-8). Undefined (with why) while any of it is not there yet.
 */
async function lookForCertificate(
  rec: PendingLinkRecord,
  directory: DirectoryClient,
  verifier: MemberVerifier,
  now: number,
): Promise<Found | string> {
  const sigKey = fromBase64url(rec.deviceKey.publicKey);
  const deviceId = deviceIdText(sigKey);
  const served = await directory.accountDevices(rec.acct);
  const entry = served.devices.find((d) => d.device_id === deviceId);
  if (entry === undefined) return "not approved yet";
  const bytes = fromBase64url(entry.certificate);
  const certificate = await parseDeviceCertificate(bytes, now);
  if (certificate.acct !== rec.acct || !bytesEqual(certificate.sigKey, sigKey)) {
    throw new ClientError(
      "device_list_conflict",
      `the directory at ${directory.baseUrl} serves a certificate for this device that is not for its key ` +
        `and account; nothing was set up`,
    );
  }
  if (served.device_list === null) return "the account's device list is not published yet";
  const list = await verifyDeviceList(
    decodeDeviceList(fromBase64url(served.device_list)),
    certificate.accountKey,
  );
  if (findDevice(list, certificate.deviceId) === undefined)
    return "the device list does not name this device yet";
  const v = await verifier.verify(rec.acct, [], { fresh: true });
  if (v.status !== "verified" || v.accountKey === undefined) {
    return `the profile of ${rec.acct} does not vouch for the new list yet (${v.status}: ${v.reason})`;
  }
  if (!bytesEqual(v.accountKey, certificate.accountKey)) {
    // Not a transient state: the certificate is by a key the profile does not name (LNK-8).
    throw new ClientError(
      "device_list_conflict",
      `the certificate the directory at ${directory.baseUrl} serves for this device is not signed by the ` +
        `account key the profile of ${rec.acct} names; nothing was set up. Link again from your other device.`,
    );
  }
  return { certificate, bytes };
}

/**
 * Waits for the approval, then sets the device up like any other: device.json (without the account key),
 * the account key pinned as verified by the profile, registration, KeyPackages. link.json goes last.
 */
export async function finishLink(
  store: DeviceStore,
  opts: LinkSetupOptions,
  services: ServiceResolver,
  home: ServiceUrls,
  wait: WaitOptions,
): Promise<DeviceRecord> {
  const rec = await store.readLink();
  if (rec === undefined) throw new ClientError("no_device", `${store.dir} is not linking a device`);
  // LNK-11: a link cut short in a directory that since got another device (create, restore): finishing
  // would write the linked device over it — its keys, after a restore the account key. Refused, as
  // beginLink does. This link's own device (a finish cut short after device.json) is set up again as before.
  if (
    (await store.hasDevice()) &&
    (await store.readDevice()).deviceKey.publicKey !== rec.deviceKey.publicKey
  ) {
    throw new ClientError(
      "device_exists",
      `${store.dir} already holds a device; nothing was changed. Link from another directory`,
    );
  }
  const directory = new DirectoryClient(checkServiceUrl(home.directory));
  const verifier = new MemberVerifier(
    {
      services,
      directoryOf: async (domain) =>
        domain === parseAcct(rec.acct).domain
          ? directory
          : DirectoryClient.resolvedBy(services, (await services.resolve(domain)).directory),
      pins: new MemoryPinStore(),
      clock: Date.now,
    },
    wait.identity,
  );
  const deadline = Date.now() + wait.timeoutMs;
  let found: Found | string = "not approved yet";
  for (;;) {
    try {
      found = await lookForCertificate(rec, directory, verifier, Math.floor(Date.now() / 1000));
    } catch (e) {
      // A service that does not answer now may later; a refusal or a bad certificate is final.
      if (!(e instanceof ServiceUnavailableError)) throw e;
      found = e.message;
    }
    if (typeof found !== "string") break;
    wait.onWaiting?.(found);
    if (Date.now() + (wait.pollMs ?? 2000) > deadline) {
      throw new ClientError(
        "link_timeout",
        `this device was not linked in time (${found}). Run the same command again to keep waiting: the ` +
          "code stays the same for an hour",
      );
    }
    await pause(wait.pollMs ?? 2000, wait.signal);
  }
  const now = Math.floor(Date.now() / 1000);
  const device = newDeviceRecord({
    acct: rec.acct,
    deviceKey: {
      publicKey: fromBase64url(rec.deviceKey.publicKey),
      signKey: fromBase64url(rec.deviceKey.signKey),
    },
    accountKey: null,
    certificate: found.bytes,
    mastodonToken: opts.mastodonToken,
    home,
    keyPackages: opts.keyPackages ?? DEFAULT_KEY_PACKAGES,
    now,
    mastodonUrl: opts.mastodonUrl,
  });
  // The account's own key, pinned as the profile vouched for it: a later swap shows as key-changed here.
  await (
    await DevicePinStore.load(store)
  ).set(rec.acct, { accountKey: found.certificate.accountKey, oobVerified: false, pinnedAt: now });
  await store.writeDevice(device);
  const done = await completeSetup(store, device);
  await store.deleteLink();
  return done;
}
