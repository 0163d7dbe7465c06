import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import { silentLogger } from "@mastodon-mls/service-kit";
import { loadDirectoryConfig } from "../config.js";
import { createDirectory, type Directory, type DirectoryDeps } from "../directory.js";
import { b64, createTestDevice, keyPackagesOf, type TestDevice } from "./devices.js";

// Real processes-in-process for route tests: the fake Mastodon on a real port, the directory on another.

/** The origin clients sign requests for; the directory checks against its config, never the Host header. */
export const PUBLIC_URL = "https://kp.a.test";

export async function startMastodon(domain = "a.test"): Promise<DevMastodon> {
  return createDevMastodon({ domain });
}

export interface RunningDirectory {
  directory: Directory;
  /** Where it listens, e.g. http://127.0.0.1:41234 */
  url: string;
  close(): Promise<void>;
}

export async function startDirectory(
  mastodonUrl: string,
  env: Record<string, string> = {},
  deps: DirectoryDeps = {},
): Promise<RunningDirectory> {
  const config = loadDirectoryConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    PUBLIC_URL,
    MASTODON_URL: mastodonUrl,
    ...env,
  });
  const directory = await createDirectory(config, { logger: silentLogger(), defaultMetrics: false, ...deps });
  const url = await directory.listen();
  return { directory, url, close: () => directory.close() };
}

export interface Answer {
  status: number;
  // Tests look into answers freely; the shapes are asserted, not assumed.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
  headers: Headers;
}

export interface CallOptions {
  method?: string;
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** A raw body, sent as is (with whatever content-type `headers` says). */
  raw?: string | Uint8Array;
}

/** One HTTP request to a running service; JSON answers parsed. */
export async function call(base: string, path: string, opts: CallOptions = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  // fetch takes an ArrayBuffer, not a Uint8Array view, in the DOM typings.
  let body: string | ArrayBuffer | undefined =
    typeof opts.raw === "string" ? opts.raw : opts.raw?.slice().buffer;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(new URL(path, base), {
    method: opts.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

/** A local account with a token, a registered device, and KeyPackages uploaded. */
export interface Member {
  username: string;
  acct: string;
  token: string;
  device: TestDevice;
}

export async function createMember(
  mastodon: DevMastodon,
  directoryUrl: string,
  username: string,
  opts: { keyPackages?: number; lastResort?: boolean; register?: boolean } = {},
): Promise<Member> {
  mastodon.createAccount({ username });
  const token = mastodon.issueToken({ username, scopes: "read write" });
  const acct = `${username}@${mastodon.domain}`;
  const device = await createTestDevice(acct);
  const member = { username, acct, token, device };
  if (opts.register === false) return member;
  const reg = await call(directoryUrl, `/v1/devices/${device.deviceId}`, {
    method: "PUT",
    token,
    body: { certificate: b64(device.certificate) },
  });
  if (reg.status !== 201) throw new Error(`registration failed: ${reg.status} ${JSON.stringify(reg.json)}`);
  const n = opts.keyPackages ?? 0;
  if (n > 0 || opts.lastResort) {
    const kps = await keyPackagesOf(device, n);
    const lastResort = opts.lastResort
      ? (await keyPackagesOf(device, 1, { lastResort: true }))[0]
      : undefined;
    const up = await call(directoryUrl, `/v1/devices/${device.deviceId}/keypackages`, {
      token,
      body: {
        key_packages: kps.map((k) => b64(k.encoded)),
        ...(lastResort ? { last_resort: b64(lastResort.encoded) } : {}),
      },
    });
    if (up.status !== 200) throw new Error(`upload failed: ${up.status} ${JSON.stringify(up.json)}`);
  }
  return member;
}
