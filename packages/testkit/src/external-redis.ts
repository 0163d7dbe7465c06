/** Mode "external": a Redis someone else runs (REDIS_URL). The harness never stops or flushes it all. */
import { Redis } from "ioredis";
import { closeRedisClients } from "./clients.js";
import type { RedisHandle } from "./types.js";
import { describeError } from "./util.js";

export type ExternalFlush = "prefix" | "db";

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return "<unparseable URL>";
  }
}

export class ExternalRedis implements RedisHandle {
  readonly kind = "external" as const;
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly dataDir = undefined;
  readonly pid = undefined;
  private stopping: Promise<void> | undefined;

  private constructor(
    url: URL,
    readonly keyPrefix: string,
    private readonly flushMode: ExternalFlush,
  ) {
    this.host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = url.port === "" ? 6379 : Number(url.port);
    this.db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
    this.url = url.toString();
  }

  static async connect(rawUrl: string, options: { db?: number; keyPrefix: string; flush: ExternalFlush }) {
    let url: URL;
    try {
      url = new URL(rawUrl);
    } catch {
      throw new Error(`REDIS_URL is not a valid URL: ${JSON.stringify(rawUrl)}`);
    }
    if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
      throw new Error(`REDIS_URL must start with redis:// or rediss://, got ${redactUrl(rawUrl)}`);
    }
    if (options.db !== undefined) url.pathname = `/${options.db}`;
    const dbPart = url.pathname.length > 1 ? url.pathname.slice(1) : "0";
    if (!/^\d+$/.test(dbPart)) throw new Error(`REDIS_URL has a bad db index: ${redactUrl(rawUrl)}`);
    const handle = new ExternalRedis(url, options.keyPrefix, options.flush);
    const client = handle.adminClient();
    try {
      await client.connect();
      const pong = await client.ping();
      if (pong !== "PONG") throw new Error(`PING answered ${String(pong)}`);
    } catch (err) {
      throw new Error(
        `REDIS_URL=${redactUrl(handle.url)} is set but that Redis did not answer: ${describeError(err)}. ` +
          `Start it, fix REDIS_URL, or unset REDIS_URL to let the harness spawn redis-server itself.`,
      );
    } finally {
      client.disconnect();
    }
    return handle;
  }

  private adminClient(): Redis {
    const client = new Redis(this.url, {
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      connectTimeout: 3000,
    });
    client.on("error", () => undefined);
    return client;
  }

  logTail(): string {
    return "";
  }

  /** Closes the harness's clients for this handle and deletes this handle's keys (keyPrefix*). */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await closeRedisClients(this);
      await this.deletePrefixedKeys();
    })();
    return this.stopping;
  }

  kill(): Promise<void> {
    return Promise.reject(
      new Error(`cannot kill an external Redis (${redactUrl(this.url)}); fault tests need mode "process"`),
    );
  }

  restart(): Promise<void> {
    return Promise.reject(
      new Error(`cannot restart an external Redis (${redactUrl(this.url)}); fault tests need mode "process"`),
    );
  }

  /** Deletes this handle's keys (keyPrefix*) — or, with `externalFlush: "db"`, the whole selected db. */
  async flush(): Promise<void> {
    if (this.flushMode === "prefix") return this.deletePrefixedKeys();
    const client = this.adminClient();
    try {
      await client.connect();
      await client.flushdb();
    } finally {
      client.disconnect();
    }
  }

  private async deletePrefixedKeys(): Promise<void> {
    const client = this.adminClient();
    try {
      await client.connect();
      const pattern = `${this.keyPrefix.replace(/[*?[\]\\]/g, "\\$&")}*`;
      let cursor = "0";
      do {
        const [next, keys] = await client.scan(cursor, "MATCH", pattern, "COUNT", 500);
        if (keys.length > 0) await client.unlink(...keys);
        cursor = next;
      } while (cursor !== "0");
    } finally {
      client.disconnect();
    }
  }
}
