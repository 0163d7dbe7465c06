import { loadDirectoryConfig } from "../config.js";
import { createDirectory } from "../directory.js";
import type { ServiceSpec } from "./apiDocs.js";

export const DIRECTORY_DOCS_ID = "keypackages";
export const DIRECTORY_DOCS_TITLE = "Key-package directory (`services/keypackages`)";

/** The directory's OpenAPI document, from a directory that is built but never listens or connects. */
export async function directoryOpenApi(): Promise<ServiceSpec> {
  const config = loadDirectoryConfig({
    MASTODON_URL: "https://mastodon.invalid",
    INSTANCE_DOMAIN: "x.test",
    LOG_LEVEL: "silent",
    SWEEP_INTERVAL_SECONDS: "0",
  });
  const directory = await createDirectory(config, { defaultMetrics: false });
  try {
    await directory.app.ready();
    return { id: DIRECTORY_DOCS_ID, title: DIRECTORY_DOCS_TITLE, spec: directory.app.swagger() };
  } finally {
    await directory.close();
  }
}
