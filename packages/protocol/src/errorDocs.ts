import { errorCatalogue } from "./errors.js";

/** docs/errors.md, rendered from the catalogue so the two cannot drift apart. */
export function renderErrorDocs(): string {
  const rows = Object.entries(errorCatalogue).map(
    ([code, spec]) => `| \`${code}\` | ${spec.status} | ${spec.message} |`,
  );
  return [
    "# Error catalogue",
    "",
    'Every HTTP error answer of both services is a JSON body `{"error": "<code>", "message": "<text>"}` with',
    "the status below; some codes add fields (`wrong_epoch` adds `epoch` and `commit_hash`). Codes are stable:",
    "clients branch on them, and a code is never renamed. Messages are for people and may be more specific",
    "than the default text here. A `500` never says anything about the service's internals.",
    "",
    "This file is generated from `packages/protocol/src/errors.ts` by `scripts/gen-error-docs.ts`.",
    "",
    "| code | status | default message |",
    "|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}
