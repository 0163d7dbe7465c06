import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { renderServiceSection, renderType, type ServiceSpec } from "./apiDocs.js";
import { DIRECTORY_DOCS_ID, directoryOpenApi } from "./directorySpec.js";

// The published OpenAPI document is complete, and docs/api.md says what it says.

type Obj = Record<string, unknown>;
let directory: ServiceSpec;
let spec: { paths: Record<string, Record<string, Obj>>; components: Obj };

beforeAll(async () => {
  directory = await directoryOpenApi();
  spec = directory.spec as typeof spec;
});

const operations = () =>
  Object.entries(spec.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, op]) => ({ route: `${method.toUpperCase()} ${path}`, op })),
  );

describe("/openapi.json", () => {
  it("has every route of DESIGN §11 the directory serves yet, and the ActivityStreams view", () => {
    expect(Object.keys(spec.paths).sort()).toEqual(
      [
        "/.well-known/mls-services",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/readyz",
        "/v1/accounts/{acct}/device-list",
        "/v1/accounts/{acct}/devices",
        "/v1/accounts/{acct}/keypackages",
        "/v1/claims",
        "/v1/devices/{deviceId}",
        "/v1/devices/{deviceId}/keypackages",
        "/v1/devices/{deviceId}/keypackages/count",
      ].sort(),
    );
  });

  it("declares both authentication schemes, and every authenticated route uses one and documents 401 and 429", () => {
    expect(spec.components.securitySchemes).toMatchObject({
      bearer: { type: "http", scheme: "bearer" },
      device: { type: "apiKey", in: "header", name: "Authorization" },
    });
    for (const { route, op } of operations()) {
      const security = (op.security ?? []) as Obj[];
      if (security.length === 0) continue;
      for (const s of security) expect(["bearer", "device"], route).toContain(Object.keys(s)[0]);
      expect(Object.keys(op.responses as Obj), route).toEqual(expect.arrayContaining(["401", "429"]));
    }
  });

  it("gives every route a summary, a described success body, and the catalogue body for its errors", () => {
    for (const { route, op } of operations()) {
      expect(op.summary, route).toEqual(expect.any(String));
      const responses = op.responses as Record<string, Obj>;
      const success = Object.keys(responses).filter((s) => s.startsWith("2"));
      expect(success.length, route).toBeGreaterThan(0);
      for (const [status, response] of Object.entries(responses)) {
        const content = response.content as Record<string, { schema: Obj }> | undefined;
        expect(content, `${route} ${status}`).toBeDefined();
        for (const { schema } of Object.values(content!)) {
          expect(Object.keys(schema).length, `${route} ${status}`).toBeGreaterThan(0);
          // /readyz answers 503 with its own {status} body; every other error is {error, message}.
          if (Number(status) >= 400 && route !== "GET /readyz") {
            expect(schema, `${route} ${status}`).toMatchObject({
              properties: { error: { type: "string" }, message: { type: "string" } },
              required: ["error", "message"],
            });
          }
        }
      }
    }
  });

  it("documents request bodies and path parameters in full", () => {
    const claim = spec.paths["/v1/claims"]!.post!;
    const body = (claim.requestBody as { content: Record<string, { schema: Obj }> }).content[
      "application/json"
    ]!.schema as { properties: Record<string, Obj>; required: string[] };
    expect(Object.keys(body.properties).sort()).toEqual(["accounts", "ciphersuite", "claim_id"]);
    expect(body.required.sort()).toEqual(["accounts", "ciphersuite"]);
    expect(body.properties.accounts).toMatchObject({ minItems: 1, maxItems: 64 });
    const upload = spec.paths["/v1/devices/{deviceId}/keypackages"]!.post!;
    expect(upload.parameters).toEqual([
      expect.objectContaining({ name: "deviceId", in: "path", required: true }),
    ]);
    const collection = spec.paths["/v1/accounts/{acct}/keypackages"]!.get!;
    expect(Object.keys((collection.responses as Record<string, Obj>)["200"]!.content as Obj)).toEqual([
      "application/activity+json",
    ]);
  });
});

describe("docs/api.md", () => {
  it("holds the directory's section exactly as rendered now (regenerate with `npm run docs:api`)", () => {
    const doc = readFileSync(new URL("../../../../docs/api.md", import.meta.url), "utf8");
    const begin = doc.indexOf(`<!-- begin ${DIRECTORY_DOCS_ID} -->`);
    const end = doc.indexOf(`<!-- end ${DIRECTORY_DOCS_ID} -->`);
    expect(begin, "docs/api.md has no directory section").toBeGreaterThanOrEqual(0);
    const section = doc.slice(begin, doc.indexOf("\n", end) + 1);
    expect(section).toBe(renderServiceSection(directory));
  });

  it("renders schemas as compact types", () => {
    expect(
      renderType(
        {
          type: "object",
          properties: {
            a: { type: "string", pattern: "^x$", description: "an a" },
            b: {
              type: "array",
              items: { anyOf: [{ type: "integer", minimum: 1 }, { type: "null" }] },
              maxItems: 3,
            },
            "@c": { const: "k" },
          },
          required: ["a"],
          additionalProperties: false,
        },
        0,
      ),
    ).toBe(
      [
        "{",
        "  a: string /* /^x$/ */; // an a",
        "  b?: (integer /* ≥ 1 */ | null)[] /* ≤ 3 items */;",
        '  "@c"?: "k";',
        "}",
      ].join("\n"),
    );
  });
});
