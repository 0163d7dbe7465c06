import { afterEach, expect, it } from "vitest";
import { MAX_PAGES_PER_READ } from "./groups/inbox.js";
import { newClient, useProxiedHub } from "./testSupport/instances.js";

// A hub whose inbox pages never end held sync(), and with it the device's lock, for ever: 5,315 pages in
// 15 s, a send waiting behind it, the device's other hubs never read (found by an audit). A cursor that
// stands still now ends the read at once; one that moves, after MAX_PAGES_PER_READ pages.

const env = useProxiedHub();
const { proxy } = env;
afterEach(() => {
  proxy.intercept = () => undefined;
});

async function aliceInBobsGroup(name: string) {
  const { a, b, resolver } = env;
  const bob = await newClient(a, `bob${name}`, resolver); // the group's hub: a.test's, behind the proxy
  const alice = await newClient(b, `alice${name}`, resolver); // her home hub: b.test's
  const { groupId } = await bob.createGroup([`@alice${name}@b.test`]);
  await alice.sync();
  expect(alice.groups().map((g) => g.groupId)).toContain(groupId);
  return { alice, groupId };
}

function endless(cursor: (page: number) => string): { pages: () => number } {
  let pages = 0;
  proxy.intercept = (req) => {
    if (req.method === "GET" && req.path.startsWith("/v1/inbox")) {
      pages++;
      const c = cursor(pages);
      return {
        status: 200,
        body: {
          items: [{ kind: "removed", group_id: "AAAAAAAAAAAAAAAAAAAAAA", seq: 1, cursor: c }],
          cursor: c,
          more: true,
        },
      };
    }
    if (req.method === "POST" && req.path === "/v1/inbox/ack") return { status: 200, body: { acked: true } };
    return undefined;
  };
  return { pages: () => pages };
}

it(
  "a hub answering the same cursor with more to come ends the read at once, and the device goes on",
  { timeout: 60_000 },
  async () => {
    const { alice, groupId } = await aliceInBobsGroup("1");
    const hub = endless(() => "c");
    const events = await alice.sync();
    expect(hub.pages()).toBeLessThanOrEqual(3);
    expect(events).toContainEqual(
      expect.objectContaining({ type: "error", message: expect.stringMatching(/the same cursor again/) }),
    );
    proxy.intercept = () => undefined;
    await alice.send(groupId, "still works");
  },
);

it(
  "a hub whose cursor moves but whose pages never end stops after MAX_PAGES_PER_READ pages",
  { timeout: 120_000 },
  async () => {
    const { alice } = await aliceInBobsGroup("2");
    const hub = endless((page) => `c${page}`);
    const events = await alice.sync();
    expect(hub.pages()).toBeLessThanOrEqual(MAX_PAGES_PER_READ + 2);
    expect(events).toContainEqual(
      expect.objectContaining({ type: "error", message: expect.stringMatching(/stopped after 1000 pages/) }),
    );
  },
);
