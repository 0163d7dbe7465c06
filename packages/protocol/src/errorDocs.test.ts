import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderErrorDocs } from "./errorDocs.js";
import { errorCatalogue } from "./errors.js";

describe("docs/errors.md", () => {
  it("matches the catalogue (regenerate with scripts/gen-error-docs.ts)", () => {
    const doc = readFileSync(new URL("../../../docs/errors.md", import.meta.url), "utf8");
    expect(doc).toBe(renderErrorDocs());
    for (const code of Object.keys(errorCatalogue)) expect(doc).toContain(`\`${code}\``);
  });

  it("gives every code a client-error or server-error status", () => {
    for (const spec of Object.values(errorCatalogue))
      expect(spec.status >= 400 && spec.status < 600).toBe(true);
  });
});
