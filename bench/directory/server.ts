// The directory under test, in its own process (so that it has a core to itself as far as the machine
// allows): configured from the environment exactly as src/main.ts is (WORKERS included), it prints one
// JSON line with its URL once listening and closes on SIGTERM.
import { createRootLogger } from "@mastodon-mls/service-kit";
import { loadDirectoryConfig, serveDirectory } from "@mastodon-mls/keypackages";

const config = loadDirectoryConfig(process.env);
const serving = await serveDirectory(
  config,
  createRootLogger({ level: config.logLevel, name: "keypackages" }),
  { env: process.env, deps: { defaultMetrics: false } },
);
// A cluster's workers run this script too: only the primary (or the single process) speaks for them.
if (serving.role !== "worker") console.log(JSON.stringify({ listening: serving.url }));
process.once("SIGTERM", () => {
  serving.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
