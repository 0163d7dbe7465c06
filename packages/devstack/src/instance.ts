import { createDelivery, loadDeliveryConfig, type Delivery } from "@mastodon-mls/delivery";
import { createDevMastodon, type DevMastodon } from "@mastodon-mls/dev-mastodon";
import { createDirectory, loadDirectoryConfig, type Directory } from "@mastodon-mls/keypackages";
import { freePort } from "./freePort.js";

export interface InstanceOptions {
  /** The instance's LOCAL_DOMAIN, e.g. "a.test": the domain of its users' handles. */
  domain: string;
  /** Local usernames created at start. */
  accounts?: readonly string[];
  host?: string;
  /** Fixed ports; 0 or absent picks free ones. */
  ports?: { mastodon?: number; directory?: number; delivery?: number };
  store?: { kind: "memory" } | { kind: "redis"; url: string; prefix?: string };
  logLevel?: string;
}

export interface InstanceUrls {
  mastodon: string;
  directory: string;
  delivery: string;
}

/** One Mastodon instance with our two services beside it, all in this process. */
export interface Instance {
  domain: string;
  urls: InstanceUrls;
  mastodon: DevMastodon;
  directory: Directory;
  delivery: Delivery;
  /** A user token with the scopes our client asks for. */
  token(username: string): string;
  /** Restarts both services on the same ports and store (the Redis data survives; memory does not). */
  restartServices(): Promise<void>;
  close(): Promise<void>;
}

const CLIENT_SCOPES = ["read", "write", "profile"];

export async function startInstance(opts: InstanceOptions): Promise<Instance> {
  const host = opts.host ?? "127.0.0.1";
  const logLevel = opts.logLevel ?? "silent";
  const mastodon = await createDevMastodon({
    domain: opts.domain,
    host,
    port: opts.ports?.mastodon ?? 0,
    accounts: (opts.accounts ?? []).map((username) => ({ username, displayName: username })),
  });
  // A port found free can be taken by another process before a service binds it (tests run in
  // parallel): unless the ports were given, everything is tried again on new ones.
  let started: Awaited<ReturnType<typeof startServices>>;
  for (let attempt = 1; ; attempt++) {
    try {
      started = await startServices(opts, host, logLevel, mastodon);
      break;
    } catch (e) {
      const retry =
        (e as { code?: unknown }).code === "EADDRINUSE" &&
        attempt < 5 &&
        !opts.ports?.directory &&
        !opts.ports?.delivery;
      if (!retry) {
        await mastodon.close();
        throw e;
      }
    }
  }
  const { urls, directoryConfig, deliveryConfig } = started;
  let { directory, delivery } = started;

  const instance: Instance = {
    domain: mastodon.domain,
    urls,
    mastodon,
    get directory() {
      return directory;
    },
    get delivery() {
      return delivery;
    },
    token: (username) => mastodon.issueToken({ username, scopes: CLIENT_SCOPES }),
    async restartServices() {
      await delivery.close();
      await directory.close();
      directory = await createDirectory(directoryConfig, { defaultMetrics: false });
      delivery = await createDelivery(deliveryConfig);
      await directory.listen();
      await delivery.listen();
    },
    async close() {
      // Reverse order of start: nothing calls a service that is already gone.
      await delivery.close();
      await directory.close();
      await mastodon.close();
    },
  };
  return instance;
}

/**
 * domain → service URLs, and the development Mastodon's (for proof publishing and lookups), for clients that
 * cannot use https://<domain>/.well-known/mls-services and WebFinger here.
 */
export function serviceMap(
  instances: readonly Instance[],
): Record<string, { directory: string; delivery: string; mastodon: string }> {
  return Object.fromEntries(
    instances.map((i) => [
      i.domain,
      { directory: i.urls.directory, delivery: i.urls.delivery, mastodon: i.urls.mastodon },
    ]),
  );
}

async function startServices(opts: InstanceOptions, host: string, logLevel: string, mastodon: DevMastodon) {
  const directoryPort = opts.ports?.directory || (await freePort(host));
  const deliveryPort = opts.ports?.delivery || (await freePort(host));
  const urls: InstanceUrls = {
    mastodon: mastodon.url,
    directory: `http://${host}:${directoryPort}`,
    delivery: `http://${host}:${deliveryPort}`,
  };
  const store = opts.store ?? { kind: "memory" as const };
  const tag = opts.domain.replace(/[^a-z0-9]/g, "_");
  const storeEnv =
    store.kind === "redis"
      ? { STORE: "redis", REDIS_URL: store.url, prefix: `${store.prefix ?? ""}${tag}:` }
      : { STORE: "memory", REDIS_URL: undefined, prefix: "" };

  const directoryConfig = loadDirectoryConfig({
    HOST: host,
    PORT: String(directoryPort),
    PUBLIC_URL: urls.directory,
    MASTODON_URL: mastodon.listenUrl,
    INSTANCE_DOMAIN: opts.domain,
    DELIVERY_URL: urls.delivery,
    STORE: storeEnv.STORE,
    REDIS_URL: storeEnv.REDIS_URL,
    REDIS_PREFIX: store.kind === "redis" ? `${storeEnv.prefix}kp:` : undefined,
    LOG_LEVEL: logLevel,
  });
  const deliveryConfig = loadDeliveryConfig({
    HOST: host,
    PORT: String(deliveryPort),
    PUBLIC_URL: urls.delivery,
    INSTANCE_DOMAIN: opts.domain,
    DIRECTORY_URL: urls.directory,
    STORE: storeEnv.STORE,
    REDIS_URL: storeEnv.REDIS_URL,
    REDIS_PREFIX: store.kind === "redis" ? `${storeEnv.prefix}ds:` : undefined,
    LOG_LEVEL: logLevel,
  });

  const directory: Directory = await createDirectory(directoryConfig, { defaultMetrics: false });
  const delivery: Delivery = await createDelivery(deliveryConfig);
  try {
    await directory.listen();
    await delivery.listen();
  } catch (e) {
    await delivery.close();
    await directory.close();
    throw e;
  }
  return { urls, directoryConfig, deliveryConfig, directory, delivery };
}
