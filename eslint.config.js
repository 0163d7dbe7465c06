import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  // vitest.config.ts files are three lines of configuration, outside every tsconfig.
  {
    ignores: [
      "**/dist/**",
      "**/node_modules/**",
      "**/.turbo/**",
      "**/coverage/**",
      "**/.build/**",
      "**/vitest.config.ts",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: {
          allowDefaultProject: ["*.js", "scripts/*.mjs"],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": ["error", { checksVoidReturn: { arguments: false } }],
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_" },
      ],
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/only-throw-error": "error",
      "no-restricted-properties": [
        "error",
        {
          object: "process",
          property: "env",
          message: "Read the environment only in a service's config module (loadConfig).",
        },
        {
          object: "process",
          property: "exit",
          message: "No process.exit in library code; only main.ts and scripts may exit.",
        },
      ],
    },
  },
  {
    // Entry points and test harnesses are where the environment is read and the process may exit.
    files: [
      "**/main.ts",
      "**/config.ts",
      "scripts/**",
      "bench/**",
      "**/*.test.ts",
      "packages/testkit/**",
      "**/cli/**",
    ],
    rules: { "no-restricted-properties": "off" },
  },
  {
    files: ["**/*.test.ts"],
    rules: {
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/unbound-method": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
    },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: { console: "readonly", process: "readonly", URL: "readonly" } },
  },
);
