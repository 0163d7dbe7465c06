import { deviceIdOf, signDeviceList } from "@mastodon-mls/bridge";
import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import { createDirectory, loadDirectoryConfig, type Directory } from "@mastodon-mls/keypackages";
import { toBase64url } from "@mastodon-mls/protocol";
import { silentLogger } from "@mastodon-mls/service-kit";
import type { TestDevice } from "./mls.js";

// The instance's real key-package directory on a port of its own, beside the development Mastodon (the
// one allowed fake) whose tokens it checks: what the hub asks before a device may act for its account.

export interface TestDirectory {
  /** http://127.0.0.1:<port>: the hub's DIRECTORY_URL. */
  url: string;
  mastodon: DevMastodon;
  /** Registers each device's certificate under its account's token, as a client does at set-up. */
  register(...devices: TestDevice[]): Promise<void>;
  /**
   * Publishes the next signed device list of the devices' account, naming exactly these devices (all of
   * one account, certified by one account key): the directory removes every other registration of it.
   */
  publishList(devices: readonly TestDevice[]): Promise<void>;
  close(): Promise<void>;
}

export async function startTestDirectory(domain = "a.test"): Promise<TestDirectory> {
  const mastodon = await createDevMastodon({ domain });
  const config = loadDirectoryConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    PUBLIC_URL: "http://directory.a.test",
    MASTODON_URL: mastodon.url,
    RATE_LIMITS: "off",
    LOG_LEVEL: "silent",
  });
  const directory: Directory = await createDirectory(config, {
    logger: silentLogger(),
    defaultMetrics: false,
  });
  const url = await directory.listen();
  const tokens = new Map<string, string>();
  const versions = new Map<string, number>();

  const tokenOf = (name: string): string => {
    let token = tokens.get(name);
    if (token === undefined) {
      mastodon.createAccount({ username: name });
      token = mastodon.issueToken({ username: name, scopes: "read write" });
      tokens.set(name, token);
    }
    return token;
  };
  const call = async (method: string, path: string, token: string, body: unknown) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  };

  return {
    url,
    mastodon,
    async register(...devices) {
      for (const d of devices) {
        await call("PUT", `/v1/devices/${d.deviceId}`, tokenOf(d.name), {
          certificate: toBase64url(d.certificate),
        });
      }
    },
    async publishList(devices) {
      const first = devices[0];
      if (!first) throw new Error("a list names the devices of one account");
      const version = (versions.get(first.acct) ?? 0) + 1;
      versions.set(first.acct, version);
      const now = Math.floor(Date.now() / 1000);
      const list = await signDeviceList(
        {
          identity: `acct:${first.acct}`,
          accountKey: first.account.publicKey,
          version,
          devices: devices.map((d) => ({
            deviceId: deviceIdOf(d.sig.publicKey),
            sigKey: d.sig.publicKey,
            name: `${d.name}'s device`,
            addedAt: now,
          })),
          issuedAt: now,
        },
        first.account,
      );
      await call("PUT", `/v1/accounts/${first.acct}/device-list`, tokenOf(first.name), {
        device_list: toBase64url(list),
      });
    },
    async close() {
      await directory.close();
      await mastodon.close();
    },
  };
}
