// One vitest configuration for every workspace: run TypeScript sources through the
// "mastodon-mls-source" export condition, never the compiled copies in dist/.
// The JSON report feeds scripts/test-summary.mjs, which prints the totals line CI reads.
/** @type {import("vitest/config").UserConfig} */
export const shared = {
  ssr: { resolve: { conditions: ["mastodon-mls-source"] } },
  resolve: { conditions: ["mastodon-mls-source"] },
  test: {
    include: ["src/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default", "json"],
    outputFile: { json: ".vitest/report.json" },
  },
};
