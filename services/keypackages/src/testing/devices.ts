import { encodeMlsMessage, generateKeyPackage, getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import {
  basicCredential,
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  profileCapabilities,
  signDeviceCertificate,
  signRequest,
  type GeneratedKeyPackage,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { toBase64url } from "@mastodon-mls/protocol";

// Test identities: an account key, a device key and the certificate binding them, as a client makes them.

export interface TestDevice {
  /** `user@domain` */
  acct: string;
  identity: string;
  account: SigningKeyPair;
  key: SigningKeyPair;
  certificate: Uint8Array;
  deviceId: string;
}

export interface TestDeviceOptions {
  /** The account key; a fresh one otherwise (a second device of one account passes the first's). */
  account?: SigningKeyPair;
  /** The identity in the certificate, if it should differ from `acct` (a lie). */
  identity?: string;
  /** The device key, if it should be reused (a new certificate for the same device). */
  key?: SigningKeyPair;
  notBefore?: number;
  notAfter?: number;
}

export async function createTestDevice(acct: string, opts: TestDeviceOptions = {}): Promise<TestDevice> {
  const now = Math.floor(Date.now() / 1000);
  const account = opts.account ?? (await generateSigningKeyPair());
  const key = opts.key ?? (await generateSigningKeyPair());
  const identity = opts.identity ?? `acct:${acct}`;
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: key.publicKey,
      notBefore: opts.notBefore ?? now - 60,
      notAfter: opts.notAfter ?? now + 30 * 86400,
    },
    account.signKey,
  );
  return { acct, identity, account, key, certificate, deviceId: deviceIdText(key.publicKey) };
}

export interface KeyPackageOptions {
  lastResort?: boolean;
  lifetimeSeconds?: number;
  now?: number;
  /** A different key than the device's (a KeyPackage for another device). */
  key?: SigningKeyPair;
  certificate?: Uint8Array;
  identity?: string;
}

export async function keyPackageOf(
  device: TestDevice,
  opts: KeyPackageOptions = {},
): Promise<GeneratedKeyPackage> {
  return generateDeviceKeyPackage({
    identity: opts.identity ?? device.identity,
    signatureKeyPair: opts.key ?? device.key,
    certificate: opts.certificate ?? device.certificate,
    lastResort: opts.lastResort,
    lifetimeSeconds: opts.lifetimeSeconds,
    now: opts.now,
  });
}

export async function keyPackagesOf(
  device: TestDevice,
  n: number,
  opts: KeyPackageOptions = {},
): Promise<GeneratedKeyPackage[]> {
  const out: GeneratedKeyPackage[] = [];
  for (let i = 0; i < n; i++) out.push(await keyPackageOf(device, opts));
  return out;
}

export const b64 = toBase64url;

export interface SignedRequestOptions {
  /** The origin the signature is made for (the directory's PUBLIC_URL unless a test lies). */
  origin: string;
  method: "GET" | "POST" | "PUT";
  path: string;
  body?: unknown;
  /** The signature's timestamp, seconds; now by default. */
  now?: number;
}

/** Headers and the exact body bytes of a device-signed request (the signature covers them). */
export async function deviceSigned(
  device: TestDevice,
  opts: SignedRequestOptions,
): Promise<{ headers: Record<string, string>; raw: string | undefined }> {
  const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const authorization = await signRequest(
    { certificate: device.certificate, signKey: device.key.signKey },
    {
      method: opts.method,
      origin: opts.origin,
      pathAndQuery: opts.path,
      body: body === undefined ? undefined : new TextEncoder().encode(body),
    },
    opts.now,
  );
  const headers: Record<string, string> = { authorization };
  if (body !== undefined) headers["content-type"] = "application/json";
  return { headers, raw: body };
}

/** A well-formed, correctly signed KeyPackage of a ciphersuite outside our profile (P-256, 0x0002). */
export async function p256KeyPackage(identity: string): Promise<Uint8Array> {
  const name = "MLS_128_DHKEMP256_AES128GCM_SHA256_P256" as const;
  const cs = await getCiphersuiteImpl(getCiphersuiteFromName(name));
  const now = BigInt(Math.floor(Date.now() / 1000));
  const { publicPackage } = await generateKeyPackage(
    basicCredential(identity),
    { ...profileCapabilities(), ciphersuites: [name] },
    { notBefore: now - 60n, notAfter: now + 86400n },
    [],
    cs,
  );
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: publicPackage });
}
