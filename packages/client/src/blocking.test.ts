import { describe, expect, it } from "vitest";
import type { DmEvent } from "./events.js";
import { newClient, useTwoInstances } from "./testSupport/instances.js";

// Blocked accounts (D17, groups/blocking.ts), against real directories and hubs on two instances: a
// stranger on b.test keeps adding alice (a.test) to groups hosted on his hub; once blocked, each new group
// is declined on arrival and left at its hub, so her place there is free again after her next read.

const env = useTwoInstances();

const ofType = <T extends DmEvent["type"]>(events: DmEvent[], type: T) =>
  events.filter((e): e is Extract<DmEvent, { type: T }> => e.type === type);

describe("blocking", () => {
  it("declines the groups of a blocked account on arrival, leaves them at the hub, and drops its invitations", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver);
    const mallory = await newClient(b, "mallory", resolver);
    const friend = await newClient(b, "friend", resolver);
    expect(await alice.block(["@mallory@b.test"])).toEqual({ blocked: ["mallory@b.test"] });
    expect(await alice.block(["mallory@b.test"])).toEqual({ blocked: [] });
    expect(alice.blocked()).toEqual(["mallory@b.test"]);

    const { groupId: spam } = await mallory.createGroup(["@alice@a.test"], { allowUnverified: true });
    const { groupId: wanted } = await friend.createGroup(["@alice@a.test"], { allowUnverified: true });
    const events = await alice.sync();
    expect(ofType(events, "declined")).toEqual([
      { type: "declined", groupId: spam, hub: b.urls.delivery, blocked: ["mallory@b.test"] },
    ]);
    // mallory's invitation (a hint on alice's home hub) is dropped; her friend's is shown.
    expect(ofType(events, "invitation").map((e) => e.from)).toEqual(["friend@b.test"]);
    expect(ofType(events, "joined").map((e) => e.groupId)).toEqual([wanted]);
    expect(Object.fromEntries(alice.groups().map((g) => [g.groupId, g.status]))).toEqual({
      [spam]: "left",
      [wanted]: "active",
    });
    // Left at mallory's hub already (the follow-up work of that sync): nothing is kept for her there,
    // and the group no longer counts against her groups; her leaf waits for mallory's Remove.
    const hub = b.delivery.context.store;
    expect(await hub.memberships(spam, alice.deviceId)).toBeUndefined();
    expect((await hub.deviceGroups(alice.deviceId)).numbers.has(spam)).toBe(false);
    expect((await hub.deviceGroups(alice.deviceId)).numbers.has(wanted)).toBe(true);
    // Nothing of the declined group is readable or writable here; a later sync brings nothing back.
    await expect(alice.send(spam, "hi")).rejects.toThrow();
    expect(ofType(await alice.sync(), "declined")).toEqual([]);

    // Unblocked, mallory's next group is joined as any other.
    expect(await alice.unblock(["mallory@b.test"])).toEqual({ unblocked: ["mallory@b.test"] });
    const { groupId: later } = await mallory.createGroup(["@alice@a.test"], { allowUnverified: true });
    expect(ofType(await alice.sync(), "joined").map((e) => e.groupId)).toEqual([later]);
  });

  it("says so when a blocked account is added to a group this device is in, and stays", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice2", resolver);
    const mallory = await newClient(b, "mallory2", resolver);
    const puppet = await newClient(b, "puppet2", resolver);
    await alice.block(["mallory2@b.test"]);
    const { groupId } = await puppet.createGroup(["@alice2@a.test"], { allowUnverified: true });
    expect(ofType(await alice.sync(), "joined").map((e) => e.groupId)).toEqual([groupId]);
    await puppet.addMembers(groupId, ["@mallory2@b.test"], { allowUnverified: true });
    expect(ofType(await alice.sync(), "member_added")).toEqual([
      { type: "member_added", groupId, accts: ["mallory2@b.test"], blocked: ["mallory2@b.test"] },
    ]);
    // Leaving is her call here: only a Welcome to such a group is declined on its own.
    expect(alice.groups().find((g) => g.groupId === groupId)?.status).toBe("active");
    void mallory;
  });

  it("refuses to block this device's own account, more than 1,000 accounts, or garbage", async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice3", resolver);
    await expect(alice.block(["@alice3@a.test"])).rejects.toThrow(/own account/);
    expect(alice.blocked()).toEqual([]);
    // At most 1,000 (MAX_BLOCKED): one more is refused whole, and nothing is half-written.
    const many = Array.from({ length: 1000 }, (_, i) => `s${i}@b.test`);
    expect((await alice.block(many)).blocked).toHaveLength(1000);
    await expect(alice.block(["one.more@b.test"])).rejects.toThrow(/at most 1000/);
    expect(alice.blocked()).toHaveLength(1000);
    await expect(alice.block(["not an account"])).rejects.toThrow();
  });
});
