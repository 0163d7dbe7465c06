export type RedisKind = "process" | "external" | "container";
export type RedisPersistence = "none" | "aof";

export interface RedisHandle {
  readonly kind: RedisKind;
  /** redis://HOST:PORT, followed by /DB when a non-zero db index was chosen. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Database index the URL selects (0 unless the `db` option or the REDIS_URL chose another). */
  readonly db: number;
  /**
   * A prefix unique to this handle (e.g. "mmls-test:3f9a0c1e:"). Tests that may share a Redis
   * (REDIS_URL) must put it in front of every key; `redisClient(handle, { prefixed: true })` does so.
   */
  readonly keyPrefix: string;
  /** The server's working directory (process mode only; removed by stop()). */
  readonly dataDir?: string;
  /** The redis-server process id (process mode only; changes on restart()). */
  readonly pid?: number;
  /**
   * Stops the server and removes its data, after closing the clients redisClient() made for it.
   * "external": the server keeps running; only this handle's keys (keyPrefix*) are deleted. Idempotent.
   */
  stop(): Promise<void>;
  /** Kills the server abruptly (default SIGKILL) and waits until it is gone. Data dir and port are kept. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port with the same data (shuts it down first if running). */
  restart(): Promise<void>;
  /** Deletes the data: FLUSHALL on a server the harness owns; on "external" only this handle's keys. */
  flush(): Promise<void>;
  /** Last lines the server logged (process mode; empty otherwise). */
  logTail(): string;
}
