import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  generateSigningKeyPair,
  publishProof,
  signDeviceList,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import { createAccountKeyBackup } from "../backup.js";
import { MlsDmClient } from "../client.js";
import { DirectoryClient } from "../transport/directoryClient.js";
import type { StaticResolver } from "../transport/resolver.js";
import { FAST_RETRY, type Instance } from "./instances.js";

/**
 * What the admin of `instance` can do to one of its users (MV-13): an account key of its own, with a
 * device list (version 10, no continuity from the real key) at the directory, the profile proof naming
 * it, and a device set up under it. Returns that key and the Mastodon token used.
 */
export async function swapAccountKey(
  instance: Instance,
  username: string,
  services: StaticResolver,
): Promise<{ key: SigningKeyPair; token: string }> {
  const acct = `${username}@${instance.domain}`;
  const key = await generateSigningKeyPair();
  const token = instance.mastodon.issueToken({ username, scopes: "read write" });
  const list = await signDeviceList(
    {
      identity: formatIdentity(parseAcct(acct)),
      accountKey: key.publicKey,
      version: 10,
      devices: [],
      issuedAt: Math.floor(Date.now() / 1000),
    },
    key,
  );
  await new DirectoryClient(instance.urls.directory).putDeviceList(acct, list, token);
  await publishProof({
    mastodonUrl: instance.mastodon.url,
    token,
    acct,
    accountKey: key,
    deviceListVersion: 10,
  });
  const backup = await createAccountKeyBackup({
    acct,
    accountKey: key,
    passphrase: "not really them",
    insecureTestKdf: true,
  });
  await MlsDmClient.restore({
    dir: join(await mkdtemp(join(tmpdir(), "mls-dm-swapped-")), "device"),
    protection: { kind: "none" },
    backup: backup.text,
    secret: "not really them",
    mastodonToken: token,
    services,
    keyPackages: 2,
    retry: FAST_RETRY,
    insecureTestKdf: true,
  });
  return { key, token };
}
