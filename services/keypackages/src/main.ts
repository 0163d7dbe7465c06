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

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
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
