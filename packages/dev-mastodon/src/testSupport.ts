// Shared by the tests: instances started on port 0 and closed after each test, and small fetch helpers.
import { afterEach } from "vitest";
import { createDevMastodon, type DevMastodon } from "./devMastodon.js";
import type { DevMastodonOptions } from "./options.js";

// Response bodies are checked field by field against Mastodon's documented shapes.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

/** Returns a starter whose instances are closed after each test of the calling file. */
export function useInstances(): (options?: Partial<DevMastodonOptions>) => Promise<DevMastodon> {
  const open: DevMastodon[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((m) => m.close()));
  });
  return async (options = {}) => {
    const m = await createDevMastodon({ domain: "a.test", ...options });
    open.push(m);
    return m;
  };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export async function json(res: Response): Promise<Json> {
  return JSON.parse(await res.text());
}

/** One property of every element of a JSON array, e.g. the names of `source.fields`. */
export function pluck(list: Json, key: string): unknown[] {
  return (list as Array<Record<string, unknown>>).map((item) => item[key]);
}
