import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HubProxy } from "./testSupport/hubProxy.js";
import { newClient, startInstance, stopInstance, type Instance } from "./testSupport/instances.js";
import { StaticResolver } from "./transport/resolver.js";

// A home directory that always counts 0 KeyPackages and refuses (or never answers) every upload — a
// hostile one, or an honest one once the Mastodon token is revoked (uploads use the token, the count the
// device signature). Each top-up stored another full set of private KeyPackages (40 files after 10
// syncs with a target of 4; found by an audit). Refused uploads are now dropped, and a device holding
// four times its target that the directory does not count makes no more.

const proxy = new HubProxy();
let a: Instance;
let resolver: StaticResolver;
let uploads: "forward" | "refuse" | "fail" = "forward";

beforeAll(async () => {
  await proxy.start();
  a = await startInstance("a.test", { directoryEnv: { PUBLIC_URL: proxy.url } });
  proxy.target = a.urls.directory;
  resolver = new StaticResolver({ "a.test": { ...a.urls, directory: proxy.url, mastodon: a.mastodon.url } });
  proxy.intercept = (req) => {
    if (uploads === "forward") return undefined;
    if (req.method === "GET" && /\/keypackages\/count$/.test(req.path)) {
      return { status: 200, body: { count: 0, last_resort: true } };
    }
    if (req.method === "POST" && /\/keypackages$/.test(req.path)) {
      return uploads === "refuse"
        ? { status: 401, body: { error: "invalid_token", message: "token not accepted" } }
        : { status: 503, body: { error: "store_unavailable", message: "try later" } };
    }
    return undefined;
  };
});

afterAll(async () => {
  if (a !== undefined) await stopInstance(a);
  await proxy.stop();
});

const files = async (dir: string) => (await readdir(join(dir, "keypackages"))).length;

describe("KeyPackage top-ups against a directory that takes none", () => {
  it("refused uploads leave nothing behind, sync after sync", { timeout: 60_000 }, async () => {
    const alice = await newClient(a, "alice", resolver, 4);
    const bob = await newClient(a, "bob", resolver, 1);
    await bob.createGroup(["@alice@a.test"]);
    uploads = "refuse";
    try {
      const events = await alice.sync();
      expect(events.some((e) => e.type === "joined")).toBe(true);
      const afterJoin = await files(alice.dir);
      for (let i = 0; i < 10; i++) await alice.sync();
      expect(await files(alice.dir)).toBe(afterJoin);
    } finally {
      uploads = "forward";
    }
  });

  it(
    "unanswered uploads are kept (the directory may have them), up to four times the target",
    { timeout: 60_000 },
    async () => {
      const carol = await newClient(a, "carol", resolver, 2);
      const before = await files(carol.dir);
      uploads = "fail";
      try {
        const problems: string[] = [];
        for (let i = 0; i < 10; i++) {
          await carol.refillKeyPackages().catch((e: Error) => problems.push(e.message));
        }
        // 2 uploaded at set-up + the last-resort one; then sets of 2 kept until 8 are held.
        expect(await files(carol.dir)).toBe(before + 6);
        expect(problems.at(-1)).toMatch(/holds 8 KeyPackages the directory .* says it does not have/);
      } finally {
        uploads = "forward";
      }
    },
  );
});
