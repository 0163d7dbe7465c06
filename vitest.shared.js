// One vitest configuration for every workspace: run TypeScript sources through the
// "mastodon-mls-source" export condition, never the compiled copies in dist/.
/** @type {import("vitest/config").UserConfig} */
export const shared = {
  ssr: { resolve: { conditions: ["mastodon-mls-source"] } },
  resolve: { conditions: ["mastodon-mls-source"] },
  test: {
    include: ["src/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
};
