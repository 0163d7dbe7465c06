// Renders docs/api.md from the OpenAPI documents of both services:
//   npm run docs:api            (rewrites the file)
//   npm run docs:api -- --check (exits 1 when the file is stale)
// A directory test (src/openapi/apiDocs.test.ts) also fails when the directory's section is stale.
import { readFileSync, writeFileSync } from "node:fs";
import { createDelivery, loadDeliveryConfig } from "@mastodon-mls/delivery";
import { directoryOpenApi, renderApiDocs, type ServiceSpec } from "@mastodon-mls/keypackages";

async function deliveryOpenApi(): Promise<ServiceSpec> {
  const delivery = await createDelivery(
    loadDeliveryConfig({ INSTANCE_DOMAIN: "x.test", LOG_LEVEL: "silent" }),
  );
  try {
    await delivery.app.ready();
    return { id: "delivery", title: "Delivery service (`services/delivery`)", spec: delivery.app.swagger() };
  } finally {
    await delivery.close();
  }
}

const target = new URL("../../../docs/api.md", import.meta.url);
const text = renderApiDocs([await directoryOpenApi(), await deliveryOpenApi()]);
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(target, "utf8");
  } catch {
    // Missing counts as stale.
  }
  if (current !== text) {
    console.error("docs/api.md is stale: run `npm run docs:api`.");
    process.exitCode = 1;
  } else {
    console.log("docs/api.md is up to date.");
  }
} else {
  writeFileSync(target, text);
  console.log("docs/api.md written.");
}
