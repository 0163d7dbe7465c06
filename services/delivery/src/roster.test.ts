import { describe, expect, it } from "vitest";
import { hubView, leafOf, placeAdds } from "./roster.js";
import type { GroupSnapshot, MemberRecord } from "./store/types.js";

const member = (n: string, departed = false): MemberRecord => ({
  device: `dev-${n}`,
  acct: `${n}@a.test`,
  ...(departed ? { departed: true as const } : {}),
});

const snapshot = (roster: [number, MemberRecord][]): GroupSnapshot => ({
  groupId: "g",
  epoch: 3,
  seq: 9,
  roster: new Map(roster),
  proposals: new Map(),
});

describe("the hub's roster", () => {
  it("keeps a departed device's leaf in the tree but not among the members", () => {
    const snap = snapshot([
      [0, member("alice")],
      [1, member("bob", true)],
      [2, member("carol")],
    ]);
    expect(leafOf(snap, "dev-bob")).toBeUndefined();
    expect(leafOf(snap, "dev-carol")).toBe(2);
    const view = hubView(snap, new Uint8Array([1]), 0);
    // Not blank: a member's Remove of it is valid (SCR-9), and an Add of the same device is not (SCR-13).
    expect(view.isBlank(1)).toBe(false);
    expect(view.deviceAt?.(1)).toBe("dev-bob");
    expect(view.leafCount).toBe(3);
    // Adds go where MLS puts them: the departed leaf is taken until removed.
    expect(placeAdds(snap.roster, [], [member("dave")]).map((a) => a.leaf)).toEqual([3]);
    expect(placeAdds(snap.roster, [1], [member("dave")]).map((a) => a.leaf)).toEqual([1]);
  });
});
