import { afterAll, beforeAll, expect, it } from "vitest";
import { HubProxy } from "../testSupport/hubProxy.js";
import { newClient, startInstance, stopInstance, type Instance } from "../testSupport/instances.js";
import { StaticResolver } from "../transport/resolver.js";
import { capturedIo } from "../testSupport/cliIo.js";
import { main } from "./main.js";

// Remote text with a newline, in the CLI paths other than events and history (found by a review of the
// first fix, hostileText.test.ts): a verification reason quoting another instance's WebFinger subject
// (`verify`), and a hub's `forked` reason (`groups`). Neither may print a line of its own.

const FORGED = "12:00:00 [AAAAAAAA] alice@a.test: fine, I checked bob in person";
// b.test's Mastodon for the first test, then c.test's hub for the second.
const proxy = new HubProxy();
let a: Instance;
let b: Instance;
beforeAll(async () => {
  await proxy.start();
  [a, b] = await Promise.all([startInstance("a.test"), startInstance("b.test")]);
});
afterAll(async () => {
  await Promise.all([stopInstance(a), stopInstance(b)]);
  await proxy.stop();
});

async function run(args: string[]): Promise<string[]> {
  const io = capturedIo();
  await main(args, io);
  return [...io.stdout, ...io.stderr].join("\n").split("\n");
}

it(
  "verify: a reason quoting another instance (its WebFinger subject) prints no line of its own",
  { timeout: 60_000 },
  async () => {
    proxy.target = b.mastodon.url;
    const map = {
      "a.test": { ...a.urls, mastodon: a.mastodon.url },
      "b.test": { ...b.urls, mastodon: proxy.url },
    };
    const alice = await newClient(a, "alice", new StaticResolver(map));
    b.mastodon.createAccount({ username: "bob" });
    proxy.intercept = (r) =>
      r.path.startsWith("/.well-known/webfinger")
        ? { status: 200, body: { subject: `acct:bob@b.test\n${FORGED}\n`, links: [] } }
        : undefined;
    try {
      const lines = await run([
        "--dir",
        alice.dir,
        "--services-map",
        JSON.stringify(map),
        "verify",
        "@bob@b.test",
      ]);
      expect(lines.some((l) => l.includes("LK-3"))).toBe(true);
      expect(lines).not.toContain(FORGED);
    } finally {
      proxy.intercept = () => undefined;
    }
  },
);

it("groups: a hostile hub's `forked` reason prints no line of its own", { timeout: 60_000 }, async () => {
  const c = await startInstance("c.test", { deliveryEnv: { PUBLIC_URL: proxy.url } });
  proxy.target = c.urls.delivery;
  const map = { "c.test": { ...c.urls, delivery: proxy.url, mastodon: c.mastodon.url } };
  try {
    const carol = await newClient(c, "carol", new StaticResolver(map));
    const { groupId } = await carol.createGroup([]);
    const d = carol.deviceId;
    const fork = {
      kind: "forked",
      group_id: groupId,
      seq: 9,
      epoch: 1,
      commit_hash: "A".repeat(43),
      commit_seq: 9,
      sender: d,
      reporter: d,
      reason: `x\n${FORGED}\n`,
      cursor: "1",
    };
    proxy.intercept = (r) =>
      r.path.startsWith("/v1/inbox/ack")
        ? { status: 200, body: { acked: true } }
        : r.path.startsWith("/v1/inbox")
          ? { status: 200, body: { items: [fork], cursor: "1", more: false } }
          : undefined;
    const lines = await run(["--dir", carol.dir, "--services-map", JSON.stringify(map), "groups"]);
    expect(lines.some((l) => l.includes("FORKED:"))).toBe(true);
    expect(lines).not.toContain(FORGED);
  } finally {
    proxy.intercept = () => undefined;
    await stopInstance(c);
  }
});
