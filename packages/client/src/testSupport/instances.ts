import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDelivery, loadDeliveryConfig, type Delivery } from "@mastodon-mls/delivery";
import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import { createDirectory, loadDirectoryConfig, type Directory } from "@mastodon-mls/keypackages";
import { freePort } from "@mastodon-mls/testkit";
import { afterAll, beforeAll } from "vitest";
import { MlsDmClient } from "../client.js";
import { HubProxy } from "./hubProxy.js";
import { settle } from "./settle.js";
import { StaticResolver, type ServiceUrls } from "../transport/resolver.js";
import type { RetryPolicy } from "../util/backoff.js";

// Test support: real instances in this process — a fake Mastodon, the real directory and the real
// delivery service (memory stores) per domain — and clients pointed at them through a static resolver.

export interface Instance {
  domain: string;
  mastodon: DevMastodon;
  directory: Directory;
  delivery: Delivery;
  urls: ServiceUrls;
}

export interface InstanceOptions {
  /** More environment variables of the delivery service (RETENTION_SECONDS, …). */
  deliveryEnv?: Record<string, string>;
  /** More environment variables of the directory (PUBLIC_URL, for one behind a proxy). */
  directoryEnv?: Record<string, string>;
  /** The delivery service's clock (retention ages entries by it); request signatures keep real time. */
  deliveryNow?: () => number;
}

export async function startInstance(domain: string, opts: InstanceOptions = {}): Promise<Instance> {
  const mastodon = await createDevMastodon({ domain });
  // A port found free can be taken by another process before the service binds it (tests run in
  // parallel): then everything is tried again on new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServices(domain, mastodon, opts);
    } catch (e) {
      if ((e as { code?: unknown }).code !== "EADDRINUSE" || attempt >= 5) {
        await mastodon.close();
        throw e;
      }
    }
  }
}

async function startServices(
  domain: string,
  mastodon: DevMastodon,
  opts: InstanceOptions,
): Promise<Instance> {
  // Services check signatures against their configured origin, so it must be where they listen.
  const [dirPort, dsPort] = [await freePort(), await freePort()];
  const urls = { directory: `http://127.0.0.1:${dirPort}`, delivery: `http://127.0.0.1:${dsPort}` };
  const directory = await createDirectory(
    loadDirectoryConfig({
      HOST: "127.0.0.1",
      PORT: String(dirPort),
      PUBLIC_URL: urls.directory,
      MASTODON_URL: mastodon.url,
      INSTANCE_DOMAIN: domain,
      DELIVERY_URL: urls.delivery,
      LOG_LEVEL: "silent",
      ...opts.directoryEnv,
    }),
    { defaultMetrics: false },
  );
  const delivery = await createDelivery(
    loadDeliveryConfig({
      HOST: "127.0.0.1",
      PORT: String(dsPort),
      PUBLIC_URL: urls.delivery,
      INSTANCE_DOMAIN: domain,
      DIRECTORY_URL: urls.directory,
      LOG_LEVEL: "silent",
      ...opts.deliveryEnv,
    }),
    opts.deliveryNow === undefined ? {} : { now: opts.deliveryNow },
  );
  try {
    await directory.listen();
    await delivery.listen();
  } catch (e) {
    await delivery.close();
    await directory.close();
    throw e;
  }
  return { domain, mastodon, directory, delivery, urls };
}

export async function stopInstance(i: Instance): Promise<void> {
  await i.delivery.close();
  await i.directory.close();
  await i.mastodon.close();
}

export function resolverFor(instances: Instance[]): StaticResolver {
  return new StaticResolver(
    Object.fromEntries(instances.map((i) => [i.domain, { ...i.urls, mastodon: i.mastodon.url }])),
  );
}

/**
 * Two instances, a.test with its delivery service behind `proxy` (started here; the hub checks signatures
 * against the proxy's origin, which clients use) and b.test, and a resolver that sends a.test's hub
 * traffic through the proxy. Stop with `stopProxied`.
 */
export async function startWithProxiedHub(
  proxy: HubProxy,
): Promise<{ a: Instance; b: Instance; resolver: StaticResolver }> {
  await proxy.start();
  const [a, b] = await Promise.all([
    startInstance("a.test", { deliveryEnv: { PUBLIC_URL: proxy.url } }),
    startInstance("b.test"),
  ]);
  proxy.target = a.urls.delivery;
  const resolver = new StaticResolver({
    "a.test": { ...a.urls, delivery: proxy.url, mastodon: a.mastodon.url },
    "b.test": { ...b.urls, mastodon: b.mastodon.url },
  });
  return { a, b, resolver };
}

export async function stopProxied(proxy: HubProxy, instances: Instance[]): Promise<void> {
  await Promise.all(instances.map(stopInstance));
  await proxy.stop();
}

/** The two instances of a test file and the resolver for them: read the fields inside its tests. */
export interface TwoInstances {
  a: Instance;
  b: Instance;
  resolver: StaticResolver;
}

/** a.test and b.test, started before the calling file's tests and stopped after them. */
export function useTwoInstances(): TwoInstances {
  const env = {} as TwoInstances;
  beforeAll(async () => {
    const [a, b] = await Promise.all([startInstance("a.test"), startInstance("b.test")]);
    Object.assign(env, { a, b, resolver: resolverFor([a, b]) });
  });
  afterAll(async () => {
    await Promise.all([env.a, env.b].filter((i) => i !== undefined).map(stopInstance));
  });
  return env;
}

/** The one instance of a test file and the resolver for it: read the fields inside its tests. */
export type OneInstance = Pick<TwoInstances, "a" | "resolver">;

/**
 * a.test alone, started before the calling file's tests and stopped after them: for files whose tests
 * never reach a second instance (hubs, keyPackages), which useTwoInstances would start for nothing.
 */
export function useOneInstance(): OneInstance {
  const env = {} as OneInstance;
  beforeAll(async () => {
    const a = await startInstance("a.test");
    Object.assign(env, { a, resolver: resolverFor([a]) });
  });
  afterAll(async () => {
    if (env.a !== undefined) await stopInstance(env.a);
  });
  return env;
}

/** startWithProxiedHub for the calling file's tests (stopped after them), with its proxy. */
export function useProxiedHub(): TwoInstances & { proxy: HubProxy } {
  const env = { proxy: new HubProxy() } as TwoInstances & { proxy: HubProxy };
  beforeAll(async () => {
    Object.assign(env, await startWithProxiedHub(env.proxy));
  });
  afterAll(() =>
    stopProxied(
      env.proxy,
      [env.a, env.b].filter((i) => i !== undefined),
    ),
  );
  return env;
}

/**
 * a.test, and b.test with its directory behind `proxy` (it checks request signatures against the proxy's
 * origin, which clients use), started before the calling file's tests and stopped after them: for tests
 * of what b.test's directory answers (`proxy.intercept`).
 */
export function useProxiedDirectory(): TwoInstances & { proxy: HubProxy } {
  const env = { proxy: new HubProxy() } as TwoInstances & { proxy: HubProxy };
  beforeAll(async () => {
    await env.proxy.start();
    const [a, b] = await Promise.all([
      startInstance("a.test"),
      startInstance("b.test", { directoryEnv: { PUBLIC_URL: env.proxy.url } }),
    ]);
    env.proxy.target = b.urls.directory;
    const resolver = new StaticResolver({
      "a.test": { ...a.urls, mastodon: a.mastodon.url },
      "b.test": { ...b.urls, directory: env.proxy.url, mastodon: b.mastodon.url },
    });
    Object.assign(env, { a, b, resolver });
  });
  afterAll(() =>
    stopProxied(
      env.proxy,
      [env.a, env.b].filter((i) => i !== undefined),
    ),
  );
  return env;
}

export const FAST_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 5, maxDelayMs: 50 };

/** A Mastodon account on the instance and the first device of it, in a fresh directory. */
export async function newClient(
  instance: Instance,
  username: string,
  resolver: StaticResolver,
  keyPackages = 3,
): Promise<MlsDmClient> {
  instance.mastodon.createAccount({ username });
  const token = instance.mastodon.issueToken({ username, scopes: "read write" });
  const dir = join(await mkdtemp(join(tmpdir(), `mls-dm-${username}-`)), "device");
  return MlsDmClient.create({
    dir,
    acct: `@${username}@${instance.domain}`,
    mastodonToken: token,
    protection: { kind: "none" },
    services: resolver,
    keyPackages,
    retry: FAST_RETRY,
  });
}

/**
 * `alice<suffix>` and `bob<suffix>` on `instance`, in a group alice made with bob, both caught up: the
 * start of many tests.
 */
export async function aliceAndBob(
  instance: Instance,
  resolver: StaticResolver,
  suffix: string,
): Promise<{ alice: MlsDmClient; bob: MlsDmClient; groupId: string }> {
  const alice = await newClient(instance, `alice${suffix}`, resolver);
  const bob = await newClient(instance, `bob${suffix}`, resolver);
  const { groupId } = await alice.createGroup([`@bob${suffix}@${instance.domain}`]);
  await settle([alice, bob]);
  return { alice, bob, groupId };
}
