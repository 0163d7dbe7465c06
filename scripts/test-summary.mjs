// Sums the vitest JSON reports of every workspace into one line, "tests: N passed, N failed, N skipped",
// and fails when a workspace that has tests left no report (a runner that crashed before reporting).
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const workspaces = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).workspaces;
const dirs = workspaces.flatMap((w) =>
  w.endsWith("/*") ? readdirSync(join(root, w.slice(0, -2))).map((d) => join(w.slice(0, -2), d)) : [w],
);
let passed = 0;
let failed = 0;
let skipped = 0;
const missing = [];
for (const dir of dirs) {
  if (!existsSync(join(root, dir, "package.json")) || !existsSync(join(root, dir, "src"))) continue;
  const report = join(root, dir, ".vitest", "report.json");
  if (!existsSync(report)) {
    missing.push(dir);
    continue;
  }
  const r = JSON.parse(readFileSync(report, "utf8"));
  passed += r.numPassedTests;
  failed +=
    r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? r.numFailedTestSuites : 0);
  skipped += r.numPendingTests + r.numTodoTests;
  console.log(`${dir}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
}
for (const dir of missing) console.log(`${dir}: no test report`);
console.log(`tests: ${passed} passed, ${failed + missing.length} failed, ${skipped} skipped`);
process.exit(failed + missing.length > 0 || passed === 0 ? 1 : 0);
