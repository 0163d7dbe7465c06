/**
 * Mode "container": redis in Docker through testcontainers, imported lazily so that nothing pays
 * for it (about half a second) unless it is used. Ryuk removes the container if the process dies.
 */
import type { StartedTestContainer } from "testcontainers";
import { closeRedisClients } from "./clients.js";
import { freePort } from "./ports.js";
import { respCall } from "./resp.js";
import type { RedisHandle, RedisPersistence } from "./types.js";
import { describeError, waitFor } from "./util.js";

type Testcontainers = typeof import("testcontainers");

let testcontainers: Promise<Testcontainers> | undefined;
function loadTestcontainers(): Promise<Testcontainers> {
  testcontainers ??= import("testcontainers");
  return testcontainers;
}

let dockerProbe: Promise<string | undefined> | undefined;
/** undefined when a container runtime answers, else why not. Cached per process. */
export function dockerUnavailableReason(): Promise<string | undefined> {
  dockerProbe ??= (async () => {
    try {
      const tc = await loadTestcontainers();
      await tc.getContainerRuntimeClient();
      return undefined;
    } catch (err) {
      return describeError(err);
    }
  })();
  return dockerProbe;
}

export interface ContainerRedisOptions {
  image: string;
  persistence: RedisPersistence;
  extraArgs: readonly string[];
  startTimeoutMs: number;
  db: number;
  keyPrefix: string;
}

const live = new Set<ContainerRedis>();

export async function stopAllContainerRedis(): Promise<void> {
  await Promise.all([...live].map((h) => h.stop()));
}

export class ContainerRedis implements RedisHandle {
  readonly kind = "container" as const;
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly keyPrefix: string;
  readonly dataDir = undefined;
  readonly pid = undefined;
  private stopping: Promise<void> | undefined;
  private killed = false;

  private constructor(
    private readonly container: StartedTestContainer,
    options: ContainerRedisOptions,
  ) {
    this.host = container.getHost();
    this.port = container.getFirstMappedPort();
    this.db = options.db;
    this.keyPrefix = options.keyPrefix;
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    this.url = `redis://${host}:${this.port}${options.db === 0 ? "" : `/${options.db}`}`;
  }

  static async start(options: ContainerRedisOptions): Promise<ContainerRedis> {
    const { GenericContainer, Wait } = await loadTestcontainers();
    const command = [
      "redis-server",
      "--save",
      "",
      "--appendonly",
      options.persistence === "aof" ? "yes" : "no",
      ...(options.persistence === "aof" ? ["--appendfsync", "always"] : []),
      ...options.extraArgs,
    ];
    let lastError: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      // A fixed host port keeps the port stable across restart() (Docker re-maps random ones).
      const hostPort = await freePort();
      try {
        const container = await new GenericContainer(options.image)
          .withExposedPorts({ container: 6379, host: hostPort })
          .withCommand(command)
          .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
          .withStartupTimeout(options.startTimeoutMs)
          .start();
        const handle = new ContainerRedis(container, options);
        live.add(handle);
        await handle.waitReady();
        return handle;
      } catch (err) {
        lastError = err;
        if (!/port is already allocated|address already in use/i.test(describeError(err))) break;
      }
    }
    throw new Error(`could not start a ${options.image} container: ${describeError(lastError)}`);
  }

  private async waitReady(): Promise<void> {
    await waitFor(
      async () => {
        const [pong] = await respCall(this.host, this.port, [["PING"]], { timeoutMs: 1000 });
        return pong === "PONG";
      },
      {
        timeoutMs: 30_000,
        intervalMs: 50,
        message: `containerised Redis on ${this.host}:${this.port} to answer PING`,
      },
    );
  }

  logTail(): string {
    return "";
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const { getContainerRuntimeClient } = await loadTestcontainers();
    const client = await getContainerRuntimeClient();
    const dockerContainer = client.container.getById(this.container.getId());
    await dockerContainer.kill({ signal });
    await dockerContainer.wait();
    this.killed = true;
  }

  async restart(): Promise<void> {
    await this.container.restart({ timeout: 5000 }); // ms: SIGTERM first, so Redis shuts down cleanly
    this.killed = false;
    await this.waitReady();
  }

  async flush(): Promise<void> {
    const [reply] = await respCall(this.host, this.port, [["FLUSHALL"]]);
    if (reply !== "OK") throw new Error(`FLUSHALL failed: ${String(reply)}`);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await closeRedisClients(this);
        await this.container.stop({ timeout: this.killed ? 0 : 2000 });
      } finally {
        live.delete(this);
      }
    })();
    return this.stopping;
  }
}
