import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { DeviceStore } from "./store/deviceStore.js";
import { FAST_RETRY, aliceAndBob, newClient, useProxiedHub } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// Issue 6: "the intent survives a restart". A change whose commit went unanswered stays pending on disk;
// when another member's commit turns out to have won that epoch, the commit is dropped and the change is
// to be made again on the new state. Before, that change was kept in memory only, for the next sync of
// the same process: a process that found it out and ended before (the CLI's `send` reads its hub first)
// lost the change, and nobody was told.

const env = useProxiedHub();

describe("a change whose commit lost its epoch", () => {
  it("is made again by the next process that syncs, when the one that found out ended first", async () => {
    const { a, resolver, proxy } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "i");
    const carol = await newClient(a, "caroli", resolver);
    // alice's add gets no answer (the hub never sees it): its outcome is unknown, so it stays pending.
    const messages = `/v1/groups/${groupId}/messages`;
    proxy.drop = (req) => req.method === "POST" && req.path === messages;
    try {
      await expect(alice.addMembers(groupId, ["@caroli@a.test"])).rejects.toThrow(/settled with the hub/);
    } finally {
      proxy.drop = () => false;
    }
    // bob's commit takes that epoch.
    await bob.selfUpdate(groupId);

    // Another process of alice's sends: its read of the hub finds bob's commit, and alice's add lost.
    const sender = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    await sender.send(groupId, "hello");
    // That process ends here. The next one syncs, and adds carol after all.
    const next = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    await settle([next, bob, carol]);
    expect(next.members(groupId).map((m) => m.acct)).toContain("caroli@a.test");
    expect(carol.groups().map((g) => g.groupId)).toContain(groupId);
  });
});

/**
 * alice's add of `carol<suffix>` gets no answer and stays pending, bob's commit takes that epoch, and
 * another process of alice's finds the add lost while sending and ends: the add is in `retryIntents`.
 */
async function loseAnAdd(suffix: string) {
  const { a, resolver, proxy } = env;
  const { alice, bob, groupId } = await aliceAndBob(a, resolver, suffix);
  const carol = await newClient(a, `carol${suffix}`, resolver);
  const messages = `/v1/groups/${groupId}/messages`;
  proxy.drop = (req) => req.method === "POST" && req.path === messages;
  try {
    await expect(alice.addMembers(groupId, [`@carol${suffix}@a.test`])).rejects.toThrow(
      /settled with the hub/,
    );
  } finally {
    proxy.drop = () => false;
  }
  await bob.selfUpdate(groupId);
  const sender = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
  await sender.send(groupId, "hello");
  return { alice, bob, carol, groupId, messages };
}

describe("a change whose commit lost its epoch, made again", () => {
  it("is kept when the hub only asks to wait (rate limited, 503), and made by a later follow-up", async () => {
    const { resolver, proxy } = env;
    const { alice, bob, carol, groupId, messages } = await loseAnAdd("j");
    const next = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    for (const refusal of [
      { status: 429, body: { error: "rate_limited", message: "slow down", retry_after: 1 } },
      { status: 503, body: { error: "store_unavailable", message: "down for a moment" } },
    ]) {
      proxy.intercept = (req) => (req.method === "POST" && req.path === messages ? refusal : undefined);
      try {
        const events = await next.sync();
        expect(events).toContainEqual(
          expect.objectContaining({ type: "error", operation: expect.stringMatching(/^retry add/) }),
        );
      } finally {
        proxy.intercept = () => undefined;
      }
    }
    await settle([next, bob, carol]);
    expect(next.members(groupId).map((m) => m.acct)).toContain("carolj@a.test");
  });

  it("leaves alone the record of the group when a re-add of this device came in while it was made", async () => {
    const { resolver, proxy } = env;
    const { alice, bob, groupId, messages } = await loseAnAdd("k");
    const next = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const store = await DeviceStore.open(alice.dir);
    // While alice's retried add is on its way, bob re-adds alice's device (D20: Remove and Add in one
    // commit): alice's add loses, and catching up brings her removal and the Welcome back in. When her
    // next commit (the self-update after joining) goes out, the group's record on disk is read.
    let phase = 0;
    let onDisk: string | undefined;
    proxy.intercept = async (req) => {
      if (req.method !== "POST" || req.path !== messages || phase === 3) return undefined;
      if (phase === 0) {
        phase = 1;
        await bob.readdDevices(groupId, [next.deviceId]);
        phase = 2;
      } else if (phase === 2) {
        phase = 3;
        onDisk = (await store.readGroup(groupId))?.status;
      }
      return undefined;
    };
    try {
      await next.sync();
    } finally {
      proxy.intercept = () => undefined;
    }
    expect(phase).toBe(3);
    expect(next.groups().find((g) => g.groupId === groupId)?.status).toBe("active");
    expect(onDisk).toBe("active");
  });

  it("is made once when the process that found it lost ended before deleting the pending commit", async () => {
    const { a, resolver, proxy } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "m");
    const messages = `/v1/groups/${groupId}/messages`;
    proxy.drop = (req) => req.method === "POST" && req.path === messages;
    try {
      await expect(alice.selfUpdate(groupId)).rejects.toThrow(/settled with the hub/);
    } finally {
      proxy.drop = () => false;
    }
    await bob.selfUpdate(groupId);
    const before = alice.epoch(groupId);
    // Another process finds the update lost, writes the group record, and ends (a crash) before
    // pending.json goes.
    const sender = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const store = (sender as unknown as { ctx: { store: { deletePending: () => Promise<void> } } }).ctx.store;
    store.deletePending = () => Promise.reject(new Error("crash"));
    await expect(sender.send(groupId, "hello")).rejects.toThrow(/crash/);

    const next = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const since = proxy.exchanges.length;
    await next.sync();
    const posted = proxy.exchanges
      .slice(since)
      .filter((e) => e.method === "POST" && e.path === messages && e.status === 201);
    // bob's commit, then alice's update made again: once.
    expect(posted).toHaveLength(1);
    expect(next.epoch(groupId)).toBe(before + 2);
  });
});
