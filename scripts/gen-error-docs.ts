// Regenerates docs/errors.md from the catalogue: `node --conditions=mastodon-mls-source --import tsx scripts/gen-error-docs.ts`.
// A protocol test fails when the file and the catalogue disagree.
import { writeFileSync } from "node:fs";
import { renderErrorDocs } from "@mastodon-mls/protocol";

writeFileSync(new URL("../docs/errors.md", import.meta.url), renderErrorDocs());
