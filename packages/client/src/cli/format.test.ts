import { describe, expect, it } from "vitest";
import { formatEvent, formatHistory, formatMember, formatMembers } from "./format.js";

// How `listen` and `sync` show a fork and a retention gap: who could not process whose commit, what it
// means for this device, and what to do. The text in `reason` comes from another member's report.

const at = new Date("2030-01-01T12:34:56Z");
const g = "AbCdEfGhIjKlMnOpQrStUv";
const bob = { acct: "bob@a.test", deviceId: "B".repeat(43) };
const carol = { acct: "carol@b.test", deviceId: "C".repeat(43) };

describe("formatEvent, forks and retention", () => {
  it("tells a member that may go on who forked the group, and how to continue without the sender", () => {
    const line = formatEvent(
      {
        type: "group_forked",
        groupId: g,
        epoch: 3,
        commitSeq: 9,
        sender: bob,
        senderProven: true,
        reporter: carol,
        reason: "processing_failed",
        stuck: false,
      },
      at,
    );
    expect(line).toBe(
      "12:34:56 [AbCdEfGh] WARNING: the group has forked: carol@b.test could not process bob@a.test's " +
        "commit that ended epoch 3 (processing_failed). You can go on here; to continue without " +
        "bob@a.test: mls-dm recreate AbCdEfGh",
    );
  });

  it("tells the stuck device that it cannot go on, and names a device whose account is unknown", () => {
    const line = formatEvent(
      {
        type: "group_forked",
        groupId: g,
        epoch: 3,
        commitSeq: 9,
        sender: { acct: null, deviceId: bob.deviceId },
        senderProven: true,
        reporter: carol,
        reason: "SCR-7\u001b[2J",
        stuck: true,
      },
      at,
    );
    expect(line).toContain(`the commit of device ${"B".repeat(12)} that ended epoch 3 (SCR-7\\u{1b}[2J)`);
    expect(line).toContain("it cannot read or send in this group any more");
    expect(line).toContain("mls-dm recreate AbCdEfGh");
  });

  it("gives a sender that is only the hub's word as such, and does not advise leaving them out (FORK-1, FORK-2)", () => {
    const fork = {
      type: "group_forked" as const,
      groupId: g,
      epoch: 3,
      commitSeq: 9,
      sender: bob,
      senderProven: false,
      reporter: carol,
      reason: "processing_failed",
    };
    const stuck = formatEvent({ ...fork, stuck: true }, at);
    expect(stuck).toContain(
      "could not process the commit that ended epoch 3 (processing_failed): it cannot read or send in " +
        "this group any more; the hub says bob@a.test sent it; its signature did not verify",
    );
    expect(stuck).toContain("they stay in it unless you name them with --without");
    expect(stuck).not.toContain("without them");
    const told = formatEvent({ ...fork, stuck: false }, at);
    expect(told).toContain(
      "carol@b.test could not process the commit that ended epoch 3 (processing_failed); the hub says " +
        "bob@a.test sent it; this device did not process that commit and cannot confirm it",
    );
    expect(told).not.toContain("without bob@a.test");
  });

  it("says what a retention gap means and what to ask for", () => {
    expect(formatEvent({ type: "behind_retention", groupId: g, seq: 41 }, at)).toBe(
      `12:34:56 [AbCdEfGh] WARNING: the hub deleted messages up to #41 before this device read them, so ` +
        `it cannot catch up in group ${g}. Ask a member to remove and re-add this device.`,
    );
  });
});

describe("formatMember", () => {
  it("shows this device, a leaving device and the reason", () => {
    const base = {
      acct: "bob@b.test",
      deviceId: "0123456789abcdef",
      leafIndex: 1,
      status: "verified" as const,
    };
    expect(formatMember({ ...base, self: false })).toBe("bob@b.test  device 0123456789ab  verified");
    expect(formatMember({ ...base, self: true, reason: "ok" })).toBe(
      "bob@b.test  device 0123456789ab  verified  (this device)  ok",
    );
    expect(formatMember({ ...base, self: false, leaving: true })).toBe(
      "bob@b.test  device 0123456789ab  verified  (leaving)",
    );
  });

  it("lines the columns up when accounts and statuses differ in length", () => {
    const lines = formatMembers([
      { acct: "al@a.test", deviceId: "aaaaaaaaaaaaaaaa", leafIndex: 0, status: "verified", self: true },
      { acct: "carol@b.test", deviceId: "cccccccccccccccc", leafIndex: 1, status: "no-proof", self: false },
      { acct: "bob@b.test", deviceId: "bbbbbbbbbbbbbbbb", leafIndex: 2, status: "key-changed", self: false },
    ]);
    expect(lines).toEqual([
      "al@a.test     device aaaaaaaaaaaa  verified     (this device)",
      "carol@b.test  device cccccccccccc  no-proof",
      "bob@b.test    device bbbbbbbbbbbb  key-changed",
    ]);
  });
});

describe("formatHistory", () => {
  const line = (from: string, own: boolean) =>
    formatHistory(
      {
        seq: 4,
        at: "2030-01-01T12:34:56.000Z",
        from,
        deviceId: "D".repeat(43),
        own,
        content: {
          kind: "activity",
          activity: {
            "@context": "https://www.w3.org/ns/activitystreams",
            v: 1,
            id: "urn:uuid:5b1c1e0a-4d0e-4c8e-9f0a-2b9c3d4e5f60",
            type: "Create",
            actor: `acct:${from}`,
            published: "2030-01-01T12:34:56.000Z",
            object: {
              type: "Note",
              id: "urn:uuid:6c2d2f1b-5e1f-4d9f-8a1b-3cad4e5f6071",
              attributedTo: `acct:${from}`,
              published: "2030-01-01T12:34:56.000Z",
              content: "hello",
            },
          },
        },
      },
      "alice@a.test",
    );

  it("marks what this device sent, what the account's other devices sent, and nobody else's", () => {
    expect(line("alice@a.test", true)).toBe("2030-01-01 12:34:56 alice@a.test (you): hello");
    expect(line("alice@a.test", false)).toBe("2030-01-01 12:34:56 alice@a.test (you, another device): hello");
    expect(line("bob@a.test", false)).toBe("2030-01-01 12:34:56 bob@a.test: hello");
  });
});
