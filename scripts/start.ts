// `npm start`: a development Mastodon with two demo accounts, the key-package directory and the delivery
// service, on the embedded in-memory store and the default ports (DESIGN §11). Ctrl-C stops everything.
//
// Environment (all optional): DEV_DOMAIN (default "localhost"), MASTODON_PORT / DIRECTORY_PORT /
// DELIVERY_PORT (7400 / 7401 / 7402), STORE=redis with REDIS_URL to use Redis instead, LOG_LEVEL.
import { DEFAULT_PORTS } from "@mastodon-mls/protocol";
import { startInstance } from "@mastodon-mls/devstack";

const env = process.env;
const domain = env.DEV_DOMAIN ?? "localhost";
const store =
  env.STORE === "redis" && env.REDIS_URL
    ? { kind: "redis" as const, url: env.REDIS_URL }
    : { kind: "memory" as const };

const instance = await startInstance({
  domain,
  accounts: ["alice", "bob"],
  ports: {
    mastodon: Number(env.MASTODON_PORT ?? DEFAULT_PORTS.mastodon),
    directory: Number(env.DIRECTORY_PORT ?? DEFAULT_PORTS.directory),
    delivery: Number(env.DELIVERY_PORT ?? DEFAULT_PORTS.delivery),
  },
  store,
  logLevel: env.LOG_LEVEL ?? "info",
}).catch((err: unknown) => {
  console.error(`Could not start: ${err instanceof Error ? err.message : String(err)}`);
  console.error(
    "Is another copy running? Set MASTODON_PORT, DIRECTORY_PORT and DELIVERY_PORT to use other ports.",
  );
  process.exit(1);
});

console.log(`
mastodon-mls is running (${store.kind} store${store.kind === "memory" ? ": nothing is kept after exit" : ""})

  development Mastodon   ${instance.urls.mastodon}   (domain "${instance.domain}")
  key-package directory  ${instance.urls.directory}
  delivery service       ${instance.urls.delivery}

  demo accounts          @alice@${instance.domain}   token ${instance.token("alice")}
                         @bob@${instance.domain}     token ${instance.token("bob")}

  try                    curl ${instance.urls.delivery}/.well-known/mls-services
                         curl ${instance.urls.directory}/openapi.json
  conversation demo      npm run demo   (in another terminal; it starts its own services)

Ctrl-C stops everything.
`);

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping…`);
  try {
    await instance.close();
    console.log("stopped cleanly");
    process.exit(0);
  } catch (err) {
    console.error("error while stopping:", err);
    process.exit(1);
  }
}
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));
