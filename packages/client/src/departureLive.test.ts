import { expect, it } from "vitest";
import type { DmEvent } from "./events.js";
import { newClient, useProxiedHub } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// A departure at the hub (D17) that could not be done at leave time is taken up again by a device that
// only listens (events()): the follow-up work after a pushed batch runs it (review of 2026-11-27: only
// an HTTP read of the hub did, so a listening device never departed).

const env = useProxiedHub();
const { proxy } = env;

it("a departure the hub could not take at leave time is done while the device listens (events())", async () => {
  const { a, b, resolver } = env;
  const alice = await newClient(a, "alicelive", resolver);
  const bob = await newClient(b, "boblive", resolver);
  const { groupId } = await alice.createGroup(["@boblive@b.test"]); // hosted by a.test's hub (proxied)
  await settle([alice, bob]);
  // The hub is unreachable for the departure at leave time: it stays pending.
  proxy.intercept = (req) => {
    if (req.method !== "POST" || req.path !== `/v1/groups/${groupId}/departure`) return undefined;
    proxy.intercept = () => undefined;
    return { status: 503, body: { error: "store_unavailable", message: "down for a moment" } };
  };
  await alice.leave(groupId);
  const hub = a.delivery.context.store;
  expect(await hub.memberships(groupId, alice.deviceId)).toBeDefined();

  // alice now listens; the hub is back. bob writes, so her stream reads the hub again.
  const controller = new AbortController();
  const seen: DmEvent[] = [];
  const done = (async () => {
    for await (const e of alice.events({ signal: controller.signal, followUpIntervalMs: 200 })) seen.push(e);
  })();
  try {
    const since = proxy.exchanges.length;
    await bob.send(groupId, "are you still there?");
    // The follow-up work (after her stream's batch, or on its timer while the departure is due) takes
    // the departure up again.
    const departed = await proxy.waitFor(
      (e) => e.method === "POST" && e.path === `/v1/groups/${groupId}/departure` && e.status === 200,
      since,
    );
    expect(departed.forwarded).toBe(true);
    expect(await hub.memberships(groupId, alice.deviceId)).toBeUndefined();
  } finally {
    controller.abort();
    await done;
  }
}, 30_000);
