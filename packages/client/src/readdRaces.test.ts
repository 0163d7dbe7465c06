import { toBase64url } from "@mastodon-mls/protocol";
import { describe, expect, it } from "vitest";
import type { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import { joinFromWelcome } from "./groups/join.js";
import type { DmEvent } from "./events.js";
import { DeviceStore } from "./store/deviceStore.js";
import { newClient, useOneInstance } from "./testSupport/instances.js";
import { linkDevice } from "./testSupport/linking.js";
import { settle as settleAll } from "./testSupport/settle.js";

// D20 (readdDevices, join.ts), from a review: what a re-add intent does when it is rebuilt on a state in which
// the device it names is gone or already re-added, what a re-add leaves in the device record, and an old
// Welcome delivered again after the group was left.

const env = useOneInstance();
const settle = (clients: MlsDmClient[]) => settleAll(clients, { rounds: 6, quietDespite: [] });
const ofType = <T extends DmEvent["type"]>(events: DmEvent[] | undefined, type: T) =>
  (events ?? []).filter((e): e is Extract<DmEvent, { type: T }> => e.type === type);

describe("readdDevices, rebuilt after a lost race", () => {
  it("does not bring back a device whose account left the group in the commit that won", async () => {
    const a = env.a;
    const dora = await newClient(a, "dora", env.resolver);
    const fay = await newClient(a, "fay", env.resolver);
    const erin = await newClient(a, "erin", env.resolver);
    const tablet = await linkDevice(erin, a, "erin", env.resolver);
    const { groupId: g } = await dora.createGroup(["@erin@a.test", "@fay@a.test"]);
    await settle([erin, tablet, fay, dora]);
    expect(fay.members(g).map((m) => m.deviceId)).toContain(tablet.deviceId);

    // erin leaves the group (all her devices); dora commits the Removes. fay has not read any of it.
    await erin.leave(g);
    await settle([dora, erin, tablet]);
    expect(dora.members(g).map((m) => m.acct)).not.toContain("erin@a.test");
    expect(tablet.groups().find((x) => x.groupId === g)?.status).toBe("left");

    // fay, one epoch behind, asks for a fresh start of erin's tablet: her commit loses (409), she reads
    // the winner, and the intent is rebuilt on the new state, where the tablet has no leaf any more.
    const report = await fay.readdDevices(g, [tablet.deviceId.slice(0, 12)]);
    await settle([dora, fay, tablet, erin]);

    // Nothing was left to re-add: the account left. The rebuilt intent must not add the tablet again.
    expect.soft(report.added).toEqual([]);
    expect.soft(dora.members(g).map((m) => m.deviceId)).not.toContain(tablet.deviceId);
    expect(tablet.groups().find((x) => x.groupId === g)?.status).toBe("left");
  });
});

describe("readdDevices, two members at once", () => {
  it("the one whose commit lost does not re-add a device the winner has just re-added", async () => {
    const a = env.a;
    const lea = await newClient(a, "lea", env.resolver);
    const max = await newClient(a, "max", env.resolver);
    const ned = await newClient(a, "ned", env.resolver);
    const { groupId: g } = await lea.createGroup(["@max@a.test", "@ned@a.test"]);
    await settle([max, ned, lea]);
    const epoch = lea.epoch(g);

    // Both are asked to give ned's device a fresh start (the advice is shown to ned, who asks everyone);
    // max has not read lea's commit when he runs it: his loses, and is rebuilt on lea's.
    await lea.readdDevices(g, [ned.deviceId.slice(0, 12)]);
    const report = await max.readdDevices(g, [ned.deviceId.slice(0, 12)]);
    const seen = await settle([ned, lea, max]);

    expect.soft(report.added).toEqual([]); // ned's leaf is already the fresh one lea's commit gave it
    expect.soft(report.skipped).toEqual([{ acct: "ned@a.test", deviceId: ned.deviceId }]); // and max is told
    expect.soft(ofType(seen.get(ned), "joined")).toHaveLength(1);
    // lea's re-add, ned's self-update on joining; not a second re-add on top
    expect(lea.epoch(g)).toBe(epoch + 2);
  });
});

describe("readdDevices, the device record", () => {
  it("remembers the KeyPackages a re-add used, as an add does (D1: a directory repeating one is refused)", async () => {
    const a = env.a;
    const gus = await newClient(a, "gus", env.resolver);
    const hal = await newClient(a, "hal", env.resolver);
    const { groupId: g } = await gus.createGroup(["@hal@a.test"]);
    await settle([hal, gus]);
    const before = Object.keys((await readDevice(gus)).addedKeyPackages);
    expect(before).toHaveLength(1); // the KeyPackage of hal's first add

    const report = await gus.readdDevices(g, [hal.deviceId.slice(0, 12)]);
    expect(report.added).toEqual([{ acct: "hal@a.test", deviceId: hal.deviceId }]);
    const back = await settle([hal, gus]);
    expect(ofType(back.get(hal), "joined")).toHaveLength(1);
    const after = Object.keys((await readDevice(gus)).addedKeyPackages);
    expect(after.filter((ref) => !before.includes(ref))).toHaveLength(1);
  });
});

describe("a Welcome delivered again after the group was left (join.ts)", () => {
  it("is not joined again when its KeyPackage was the last-resort one, which is kept after use", async () => {
    const a = env.a;
    const ida = await newClient(a, "ida", env.resolver);
    const kim = await newClient(a, "kim", env.resolver, 1); // one KeyPackage, then the last-resort one
    await ida.createGroup(["@kim@a.test"]); // takes kim's only ordinary KeyPackage
    const { groupId: g } = await ida.createGroup(["@kim@a.test"]); // kim's last-resort KeyPackage
    const stretch = (await a.delivery.context.store.memberships(g, kim.deviceId))!.memberships[0]!;
    const welcome = (await a.delivery.context.store.welcome(g, stretch.from))!;
    await settle([kim, ida]);
    expect(kim.groups().find((x) => x.groupId === g)?.status).toBe("active");

    await ida.removeMembers(g, ["@kim@a.test"]);
    await settle([kim, ida]);
    expect(kim.groups().find((x) => x.groupId === g)?.status).toBe("left");

    // The same Welcome item once more (a batch processed again after a crash before its cursor was
    // saved, or a hub replaying it): the group was left since; the Welcome is old (seq below lastSeq).
    const ctx = (kim as unknown as { ctx: DeviceContext }).ctx;
    const seen: DmEvent[] = [];
    const emit = ctx.emit;
    ctx.emit = (e: DmEvent) => {
      seen.push(e);
      emit.call(ctx, e);
    };
    await joinFromWelcome(ctx, ctx.groups.get(g)!.record.hub, {
      kind: "welcome",
      group_id: g,
      seq: stretch.from,
      welcome: toBase64url(welcome),
      cursor: "x",
    });
    expect(ofType(seen, "joined")).toEqual([]);
    expect(ctx.groups.get(g)?.record.status).toBe("left");
  });
});

async function readDevice(c: MlsDmClient) {
  const store = await DeviceStore.open(c.dir);
  return store.readDevice();
}
