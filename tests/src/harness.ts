import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MlsDmClient, StaticResolver, type DmEvent, type RetryPolicy } from "@mastodon-mls/client";
import { serviceMap, startInstance, type Instance } from "@mastodon-mls/devstack";
import { startRedis, type RedisHandle } from "@mastodon-mls/testkit";

// The whole system for end-to-end tests: two instances (a fake Mastodon, the real directory and the
// real delivery service each), on the in-memory store or on a real redis-server, and clients on disk.

export type StoreKind = "memory" | "redis";

export interface World {
  a: Instance;
  b: Instance;
  redis: RedisHandle | undefined;
  services: StaticResolver;
  home: string;
  device(instance: Instance, user: string): Promise<MlsDmClient>;
  reopen(client: MlsDmClient): Promise<MlsDmClient>;
  close(): Promise<void>;
}

export const FAST_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 5, maxDelayMs: 50 };

export async function startWorld(store: StoreKind): Promise<World> {
  const redis = store === "redis" ? await startRedis() : undefined;
  const storeOption = redis
    ? { kind: "redis" as const, url: redis.url, prefix: redis.keyPrefix }
    : { kind: "memory" as const };
  const [a, b] = await Promise.all([
    startInstance({ domain: "a.test", accounts: ["alice", "bob"], store: storeOption }),
    startInstance({ domain: "b.test", accounts: ["carol"], store: storeOption }),
  ]);
  // Where each test domain's Mastodon is, too: clients verify members' profile proofs (docs/identity.md).
  const map = serviceMap([a, b]);
  const services = new StaticResolver(
    Object.fromEntries([a, b].map((i) => [i.domain, { ...map[i.domain]!, mastodon: i.urls.mastodon }])),
  );
  const home = await mkdtemp(join(tmpdir(), "mmls-e2e-"));
  return {
    a,
    b,
    redis,
    services,
    home,
    device: (instance, user) =>
      MlsDmClient.create({
        dir: join(home, `${user}-${instance.domain}`),
        acct: `${user}@${instance.domain}`,
        mastodonToken: instance.token(user),
        // Test devices: plain files (mode 0600); encryption at rest is tested in packages/client.
        protection: { kind: "none" },
        services,
        keyPackages: 4,
        retry: FAST_RETRY,
      }),
    reopen: (client) => MlsDmClient.open(client.dir, { services, retry: FAST_RETRY }),
    async close() {
      await Promise.all([a.close(), b.close()]);
      await redis?.stop();
      await rm(home, { recursive: true, force: true });
    },
  };
}

/**
 * Lets every client sync in turn until a whole round brings nothing new (joins trigger self-updates,
 * which the others then process). Bounded: clients that never settle fail the test.
 */
export async function settle(
  clients: readonly MlsDmClient[],
  rounds = 8,
): Promise<Map<MlsDmClient, DmEvent[]>> {
  const all = new Map<MlsDmClient, DmEvent[]>(clients.map((c) => [c, []]));
  for (let round = 0; round < rounds; round++) {
    let quiet = true;
    for (const c of clients) {
      const events = await c.sync();
      all.get(c)!.push(...events);
      if (events.length > 0) quiet = false;
    }
    if (quiet) return all;
  }
  throw new Error(`clients did not settle within ${rounds} rounds`);
}

export function texts(events: readonly DmEvent[] | undefined): string[] {
  return (events ?? []).flatMap((e) => (e.type === "message" ? [`${e.from}: ${e.note.content}`] : []));
}
