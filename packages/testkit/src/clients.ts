import { Redis, type RedisOptions } from "ioredis";
import type { RedisHandle } from "./types.js";
import { waitFor } from "./util.js";

export interface RedisClientOptions extends RedisOptions {
  /** Prefix every key with the handle's unique `keyPrefix` (ioredis `keyPrefix`). Default false. */
  prefixed?: boolean;
  /**
   * Attach a no-op "error" listener so that connection errors (expected in fault tests) are not
   * printed by ioredis. Commands still reject. Default true.
   */
  quiet?: boolean;
}

const tracked = new Map<Redis, RedisHandle>();

/**
 * An ioredis client connected to `handle` (its URL, including the db index). The caller closes it
 * (`client.disconnect()` or `quit()`); `closeRedisClients()` closes every client still open, and a
 * handle's `stop()` closes the clients made for it.
 *
 * `db` overrides the handle's db index.
 * Defaults suited to tests (all overridable): reconnect quickly (50 ms steps, at most 500 ms) and
 * fail a command after 2 retries instead of queueing it for a long time while Redis is down.
 */
export function redisClient(handle: RedisHandle, options: RedisClientOptions = {}): Redis {
  const { prefixed = false, quiet = true, ...rest } = options;
  // ioredis lets the URL's db win over the `db` option: put an explicit db into the URL instead.
  const url = new URL(handle.url);
  if (rest.db !== undefined) url.pathname = `/${rest.db}`;
  const client = new Redis(url.toString(), {
    retryStrategy: (times) => Math.min(50 * times, 500),
    maxRetriesPerRequest: 2,
    connectTimeout: 5000,
    ...(prefixed ? { keyPrefix: handle.keyPrefix } : {}),
    ...rest,
  });
  if (quiet) client.on("error", () => undefined);
  tracked.set(client, handle);
  client.once("end", () => tracked.delete(client));
  return client;
}

/** Closes (disconnects) the clients made by redisClient(): all of them, or only those of `handle`. */
export async function closeRedisClients(handle?: RedisHandle): Promise<void> {
  const clients = [...tracked].filter(([, h]) => handle === undefined || h === handle).map(([c]) => c);
  for (const client of clients) {
    tracked.delete(client);
    client.disconnect();
  }
  await waitFor(() => clients.every((c) => c.status === "end"), {
    timeoutMs: 2000,
    intervalMs: 10,
    message: "ioredis clients to reach status 'end' after disconnect()",
  });
}

/** Number of clients made by redisClient() that are not closed yet (for leak checks). */
export function openRedisClientCount(): number {
  return tracked.size;
}
