import { describe, expect, it } from "vitest";
import { GroupRecord } from "../store/schemas.js";
import { checkNotice, rememberCommit } from "./processedCommits.js";

// What a fork notice is checked against (FORK-3, FORK-4): the commits this device took, bounded as the
// hub's fork records are (D5), since the record is written with every commit.

const record = (): GroupRecord => ({
  groupId: "g",
  hub: "http://hub",
  status: "active",
  state: null,
  lastSeq: -1,
  leaves: {},
  buffered: [],
  unsentInvitations: [],
  needsSelfUpdate: false,
  ownLeafUpdatedAt: 0,
  leaving: [],
});
const hash = (n: number) => `h${n}`.padEnd(43, "x");

describe("processed commits", () => {
  it("keeps the newest 64, one per epoch, and the record stays valid", () => {
    const r = record();
    for (let e = 0; e < 100; e++) rememberCommit(r, { epoch: e, hash: hash(e), signer: "bob" });
    rememberCommit(r, { epoch: 99, hash: hash(1000), signer: "carol" });
    expect(r.processedCommits).toHaveLength(64);
    expect(r.processedCommits![0]!.epoch).toBe(36);
    expect(r.processedCommits!.at(-1)).toEqual({ epoch: 99, hash: hash(1000), signer: "carol" });
    expect(r.processedCommits!.filter((c) => c.epoch === 99)).toHaveLength(1);
    expect(GroupRecord.safeParse(r).success).toBe(true);
  });

  it("tells a notice that matches from one that contradicts, names another commit, or one never seen", () => {
    const r = { ...record(), promoted: [hash(9)] };
    rememberCommit(r, { epoch: 3, hash: hash(3), signer: "carol" });
    const check = (epoch: number, h: string, sender: string) =>
      checkNotice(r, "me", { epoch, commitHash: h, sender });
    expect(check(3, hash(3), "carol")).toEqual({ kind: "proven" });
    expect(check(3, hash(3), "bob")).toEqual({ kind: "contradicted", signer: "carol", epoch: 3 });
    expect(check(4, hash(3), "carol")).toEqual({ kind: "contradicted", signer: "carol", epoch: 3 });
    // An own commit the group took, known by its hash alone.
    expect(check(7, hash(9), "me")).toEqual({ kind: "proven" });
    expect(check(7, hash(9), "bob")).toEqual({ kind: "contradicted", signer: "me", epoch: undefined });
    expect(check(3, hash(5), "bob")).toEqual({ kind: "other_commit" });
    expect(check(5, hash(5), "bob")).toEqual({ kind: "unseen" });
  });
});
