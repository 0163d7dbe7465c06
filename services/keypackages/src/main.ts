import { ConfigError, createRootLogger } from "@mastodon-mls/service-kit";
import { loadDirectoryConfig, type DirectoryConfig } from "./config.js";
import { serveDirectory } from "./serve.js";

let config: DirectoryConfig;
try {
  config = loadDirectoryConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(1);
}

const log = createRootLogger({ level: config.logLevel, name: "keypackages" });
const serving = await serveDirectory(config, log, { env: process.env });
// Workers of a cluster answer to their primary, which logs once for all of them.
if (serving.role !== "worker") {
  log.info(
    { url: serving.url, store: config.store, mastodon: config.mastodonUrl, workers: config.workers },
    "key-package directory listening",
  );
}
serving.stopped.catch((err: unknown) => {
  log.fatal({ err }, "the directory stopped");
  process.exit(1);
});

// `on`, not `once`: a second signal while closing (systemd signalling every process of a cluster, or
// Ctrl-C in a terminal reaching the workers too, on top of the primary's SIGTERM to them) must not fall
// back to Node's default, which ends the process at once and drops its in-flight requests.
let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    serving.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
