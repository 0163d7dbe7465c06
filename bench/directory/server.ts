// The directory under test, in its own process (so that it has a core to itself as far as the machine
// allows): configured from the environment exactly as src/main.ts is, it prints one JSON line with its
// URL once listening and closes on SIGTERM.
import { createDirectory, loadDirectoryConfig } from "@mastodon-mls/keypackages";

const directory = await createDirectory(loadDirectoryConfig(process.env), { defaultMetrics: false });
const url = await directory.listen();
console.log(JSON.stringify({ listening: url }));
process.once("SIGTERM", () => {
  directory.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
