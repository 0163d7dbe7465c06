#!/usr/bin/env node
// The `mls-dm` command. Runs the compiled CLI (dist/cli/run.js) when it is built and not older than the
// sources; otherwise the TypeScript sources through tsx, with the workspace's "mastodon-mls-source" export
// condition, so that a clean checkout needs no build step. MLS_DM_FROM_SOURCE=1 forces the sources.
import { spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const built = join(root, "dist", "cli", "run.js");
const source = join(root, "src", "cli", "run.ts");

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

// eslint-disable-next-line no-restricted-properties -- the launcher's one switch, documented in the README
const forceSource = process.env.MLS_DM_FROM_SOURCE === "1";
const useBuilt =
  !forceSource &&
  existsSync(built) &&
  (!existsSync(join(root, "src")) || statSync(built).mtimeMs >= newestSource(join(root, "src")));

if (useBuilt) {
  await import(pathToFileURL(built).href);
} else {
  let tsx;
  try {
    tsx = import.meta.resolve("tsx");
  } catch {
    console.error(
      "mls-dm: the CLI is not built and tsx is not installed; run `npm install` at the repository root " +
        "(or `npm run build`)",
    );
    process.exitCode = 70;
  }
  if (tsx !== undefined) {
    const child = spawn(
      process.execPath,
      ["--conditions=mastodon-mls-source", "--import", tsx, source, ...process.argv.slice(2)],
      { stdio: "inherit" },
    );
    // A terminal's Ctrl-C reaches both processes; a signal sent to this one alone is passed on.
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
      process.on(signal, () => child.kill(signal));
    }
    child.on("exit", (code, signal) => {
      process.exitCode =
        code ?? (signal === null ? 70 : 128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal] ?? 0));
    });
  }
}
