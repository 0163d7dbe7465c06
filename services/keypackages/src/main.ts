import { ConfigError, createRootLogger } from "@mastodon-mls/service-kit";
import { loadDirectoryConfig, type DirectoryConfig } from "./config.js";
import { createDirectory } from "./directory.js";

let config: DirectoryConfig;
try {
  config = loadDirectoryConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(1);
}

const log = createRootLogger({ level: config.logLevel, name: "keypackages" });
const directory = await createDirectory(config, { logger: log });
const url = await directory.listen();
log.info({ url, store: config.store, mastodon: config.mastodonUrl }, "key-package directory listening");

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log.info({ signal }, "shutting down");
    directory.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
