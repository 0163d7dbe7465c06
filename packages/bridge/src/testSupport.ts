// Shared by the identity tests: two fake instances (a.test, b.test) on real ports, users with an account
// key, devices, certificates, a signed device list and a published proof, and a lookup that maps the
// test domains to the fakes' loopback URLs.
import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import { formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import { createRestAPIClient } from "masto";
import type { LeafNode } from "ts-mls";
import { lookupAcct, type LookupResult } from "./acctLookup.js";
import { generateSigningKeyPair, type SigningKeyPair } from "./crypto.js";
import { signDeviceCertificate } from "./deviceCertificate.js";
import {
  addDevice,
  createDeviceList,
  decodeDeviceList,
  reissueDeviceList,
  revokeDevice,
  verifyDeviceList,
  type DeviceList,
} from "./deviceList.js";
import { generateDeviceKeyPackage } from "./keyPackage.js";
import { signKeyRotation } from "./keyRotation.js";
import type { DirectoryAccount } from "./memberStatus.js";
import { publishProof } from "./publishProof.js";
import { createSafeHttpGet } from "./safeHttp.js";

export const NOW = Math.floor(Date.now() / 1000);

export interface Device {
  keys: SigningKeyPair;
  certificate: Uint8Array;
  leaf: LeafNode;
}

export interface User {
  acct: string;
  identity: string;
  username: string;
  instance: DevMastodon;
  token: string;
  accountKey: SigningKeyPair;
  devices: Device[];
  list: DeviceList;
  listBytes: Uint8Array;
  rotations: Uint8Array[];
}

export interface World {
  a: DevMastodon;
  b: DevMastodon;
  /** domain → origin where its WebFinger is asked */
  origins: Map<string, string>;
  resolveOrigin(domain: string): string;
  lookup(acct: string): Promise<LookupResult>;
  close(): Promise<void>;
}

export async function startWorld(): Promise<World> {
  const [a, b] = await Promise.all([
    createDevMastodon({ domain: "a.test" }),
    createDevMastodon({ domain: "b.test" }),
  ]);
  const origins = new Map([
    ["a.test", a.url],
    ["b.test", b.url],
  ]);
  const resolveOrigin = (domain: string) => origins.get(domain) ?? `https://${domain}`;
  const get = createSafeHttpGet({ allowInsecureLoopback: true, timeoutMs: 5000 });
  return {
    a,
    b,
    origins,
    resolveOrigin,
    lookup: (acct) => lookupAcct(acct, { get, resolveOrigin }),
    close: async () => {
      await Promise.all([a.close(), b.close()]);
    },
  };
}

let counter = 0;
/** A username not used before in this process, so tests can share instances. */
export function freshName(prefix: string): string {
  counter++;
  return `${prefix}${counter}`;
}

export async function makeDevice(
  identity: string,
  accountKey: SigningKeyPair,
  opts: { notBefore?: number; notAfter?: number; certIdentity?: string } = {},
): Promise<Device> {
  const keys = await generateSigningKeyPair();
  const certificate = await signDeviceCertificate(
    {
      identity: opts.certIdentity ?? identity,
      accountKey: accountKey.publicKey,
      sigKey: keys.publicKey,
      notBefore: opts.notBefore ?? NOW - 60,
      notAfter: opts.notAfter ?? NOW + 30 * 86400,
    },
    accountKey.signKey,
  );
  // The certificate goes in the leaf whatever it says: tests check that receivers refuse bad ones.
  const kp = await generateDeviceKeyPackage({ identity, signatureKeyPair: keys, certificate, now: NOW });
  return { keys, certificate, leaf: kp.publicPackage.leafNode };
}

export async function setList(user: User, bytes: Uint8Array): Promise<void> {
  user.listBytes = bytes;
  user.list = await verifyDeviceList(decodeDeviceList(bytes), decodeDeviceList(bytes).accountKey, NOW);
}

export async function publish(user: User, version = user.list.version): Promise<void> {
  await publishProof({
    mastodonUrl: user.instance.url,
    token: user.token,
    acct: user.acct,
    accountKey: user.accountKey,
    deviceListVersion: version,
  });
}

/** A local account with `devices` devices, a version-1 list and its proof published. */
export async function makeUser(instance: DevMastodon, prefix: string, devices = 1): Promise<User> {
  const username = freshName(prefix);
  instance.createAccount({ username });
  const acct = `${username}@${instance.domain}`;
  const identity = formatIdentity(parseAcct(acct));
  const accountKey = await generateSigningKeyPair();
  const devs = await Promise.all(Array.from({ length: devices }, () => makeDevice(identity, accountKey)));
  const listBytes = await createDeviceList({
    identity,
    accountKey,
    devices: devs.map((d, i) => ({ sigKey: d.keys.publicKey, name: `device ${i + 1}` })),
    now: NOW,
  });
  const user: User = {
    acct,
    identity,
    username,
    instance,
    token: instance.issueToken({ username, scopes: "read write" }),
    accountKey,
    devices: devs,
    list: undefined as unknown as DeviceList,
    listBytes,
    rotations: [],
  };
  await setList(user, listBytes);
  await publish(user);
  return user;
}

export async function addUserDevice(user: User): Promise<Device> {
  const device = await makeDevice(user.identity, user.accountKey);
  await setList(
    user,
    await addDevice(user.list, { sigKey: device.keys.publicKey, name: "new" }, user.accountKey, NOW),
  );
  user.devices.push(device);
  return device;
}

export async function revokeUserDevice(user: User, device: Device): Promise<void> {
  const id = user.list.devices.find((d) =>
    d.sigKey.every((b, i) => b === device.keys.publicKey[i]),
  )!.deviceId;
  await setList(user, await revokeDevice(user.list, id, user.accountKey, NOW));
}

/** A new account key; with `continuity` the old key signs the new one. The list is re-issued and the proof re-published. */
export async function rotateAccountKey(user: User, continuity: boolean): Promise<void> {
  const next = await generateSigningKeyPair();
  if (continuity) {
    user.rotations.push(
      await signKeyRotation({
        identity: user.identity,
        oldKey: user.accountKey,
        newKey: next.publicKey,
        now: NOW,
      }),
    );
  }
  await setList(user, await reissueDeviceList(user.list, next, NOW));
  user.accountKey = next;
  await publish(user);
}

export function directoryOf(user: User): DirectoryAccount {
  return { deviceList: user.listBytes, keyRotations: user.rotations };
}

/** Writes a field set directly (bypassing publishProof), as a user or an admin editing a profile would. */
export async function setFields(user: User, fields: Array<{ name: string; value: string }>): Promise<void> {
  const client = createRestAPIClient({ url: user.instance.url, accessToken: user.token });
  await client.v1.accounts.updateCredentials({ fieldsAttributes: fields });
}
