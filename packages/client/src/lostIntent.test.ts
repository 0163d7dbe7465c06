import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
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
