import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MlsDmClient } from "../client.js";
import { DeviceStore } from "../store/deviceStore.js";
import type { StaticResolver } from "../transport/resolver.js";
import { FAST_RETRY, type Instance } from "./instances.js";

/** A second device of `first`'s account (on `instance`, user `username`), linked as `mls-dm link-device` does. */
export async function linkDevice(
  first: MlsDmClient,
  instance: Instance,
  username: string,
  resolver: StaticResolver,
): Promise<MlsDmClient> {
  return (await linkDeviceApproved(first, instance, username, resolver)).device;
}

/** linkDevice, with what `first`'s approval said. */
export async function linkDeviceApproved(
  first: MlsDmClient,
  instance: Instance,
  username: string,
  resolver: StaticResolver,
): Promise<{ device: MlsDmClient; approval: Awaited<ReturnType<MlsDmClient["approveLink"]>> }> {
  const token = instance.mastodon.issueToken({ username, scopes: "read write" });
  const dir = join(await mkdtemp(join(tmpdir(), `mls-dm-${username}-linked-`)), "device");
  const store = await DeviceStore.create(dir, { kind: "none" });
  const setup = { acct: first.acct, mastodonToken: token, deviceName: "second", keyPackages: 2 };
  const pending = await MlsDmClient.beginLink(store, setup);
  const approval = await first.approveLink(pending.code, pending.confirmation);
  const device = await MlsDmClient.finishLink(
    store,
    { ...setup, services: resolver, retry: FAST_RETRY },
    { timeoutMs: 30_000, pollMs: 100 },
  );
  return { device, approval };
}
