// The services the client benchmark talks to, in a process of their own (started by run.ts through
// child_process.fork): a development Mastodon, the real key-package directory and the real delivery
// service of one instance, all on their in-memory stores. Built like packages/devstack's startInstance,
// except that every rate limit is kept on but set far above what the benchmark does (the benchmark's
// one account adds hundreds of members and commits several times a second, and hundreds of member
// verifications look accounts up on the same Mastodon), which startInstance has no option for.
//
// IPC: sends {ready: {domain, mastodon, directory, delivery}} once listening; answers
// {id, accounts: string[]} (usernames to create) with {id, tokens: string[]}; stops on {stop: true}.
import { createDelivery, loadDeliveryConfig } from "@mastodon-mls/delivery";
import { createDevMastodon } from "@mastodon-mls/dev-mastodon";
import { createDirectory, loadDirectoryConfig } from "@mastodon-mls/keypackages";
import { freePort } from "@mastodon-mls/testkit";

const DOMAIN = process.env.BENCH_DOMAIN ?? "bench.test";
const HOST = "127.0.0.1";
const HUGE = String(1_000_000_000);
/** The scopes devstack gives its users: what the client asks for at login. */
const SCOPES = ["read", "write", "profile"];

const mastodon = await createDevMastodon({
  domain: DOMAIN,
  host: HOST,
  rateLimits: {
    authenticated: { limit: 1_000_000_000, periodSeconds: 300 },
    unauthenticated: { limit: 1_000_000_000, periodSeconds: 300 },
  },
});
const [directoryPort, deliveryPort] = [await freePort(HOST), await freePort(HOST)];
const urls = {
  domain: DOMAIN,
  mastodon: mastodon.url,
  directory: `http://${HOST}:${directoryPort}`,
  delivery: `http://${HOST}:${deliveryPort}`,
};

const directory = await createDirectory(
  loadDirectoryConfig({
    HOST,
    PORT: String(directoryPort),
    PUBLIC_URL: urls.directory,
    MASTODON_URL: mastodon.listenUrl,
    INSTANCE_DOMAIN: DOMAIN,
    DELIVERY_URL: urls.delivery,
    STORE: "memory",
    LOG_LEVEL: "silent",
    RATE_LIMITS: "on",
    RATE_LIMIT_DEVICE_MAX: HUGE,
    RATE_LIMIT_DOMAIN_MAX: HUGE,
    RATE_LIMIT_TARGET_MAX: HUGE,
    RATE_LIMIT_ACCOUNT_MAX: HUGE,
  }),
  { defaultMetrics: false },
);
const delivery = await createDelivery(
  loadDeliveryConfig({
    HOST,
    PORT: String(deliveryPort),
    PUBLIC_URL: urls.delivery,
    INSTANCE_DOMAIN: DOMAIN,
    DIRECTORY_URL: urls.directory,
    STORE: "memory",
    LOG_LEVEL: "silent",
    RATE_SUBMISSIONS: HUGE,
    RATE_COMMITS: HUGE,
    RATE_INVITATIONS: HUGE,
    RATE_INVITATIONS_RECEIVED: HUGE,
    MAX_QUEUED_INVITATIONS: "1000000",
  }),
);
await directory.listen();
await delivery.listen();

type Request = { id: number; accounts: string[] } | { stop: true };

process.on("message", (raw: Request) => {
  if ("stop" in raw) {
    void (async () => {
      await delivery.close();
      await directory.close();
      await mastodon.close();
      process.exit(0);
    })();
    return;
  }
  const tokens = raw.accounts.map((username) => {
    mastodon.createAccount({ username, displayName: username });
    return mastodon.issueToken({ username, scopes: SCOPES });
  });
  process.send!({ id: raw.id, tokens });
});
// The parent went away without saying stop: do not linger.
process.on("disconnect", () => process.exit(0));
process.send!({ ready: urls });
