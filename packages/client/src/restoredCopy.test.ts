import { cp, rm } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { main } from "./cli/main.js";
import { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { capturedIo } from "./testSupport/cliIo.js";
import { notes } from "./testSupport/history.js";
import { FAST_RETRY, aliceAndBob, useOneInstance } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// A device directory put back from an older copy (a restored backup of a home directory): the group
// state in it is behind what the device sent since. Its sending ratchet would hand out again the key
// generations of the messages it sent after the copy was made, which the others have used up: every such
// message would be undecryptable to them. The hub still holds those messages (until every member read
// them; otherwise it says behind_retention): their echoes tell the device, which reads them back as its
// own, so the ratchet moves past them and the history has them again. A commit it sent after the copy
// cannot be followed from the older state: the device says it needs a fresh start.

const env = useOneInstance();

/** Puts `dir` back as it was in `copy` (the device is closed meanwhile: no process has it open). */
async function restore(dir: string, copy: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await cp(copy, dir, { recursive: true });
}

const errors = (events: DmEvent[]) => events.flatMap((e) => (e.type === "error" ? [e.message] : []));

describe("a device directory restored from an older copy", () => {
  it("reads back the messages it sent since, and uses none of their keys again", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "r");
    await alice.send(groupId, "before the copy");
    await settle([alice, bob]);
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    await alice.send(groupId, "one");
    await alice.send(groupId, "two");
    await alice.historyWritten();

    await restore(alice.dir, copy);
    const restored = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const events = await restored.sync();
    expect(errors(events).join("\n")).toMatch(/older than messages it sent/);
    expect((await notes(restored, groupId)).map((n) => [n.text, n.own])).toEqual([
      ["before the copy", true],
      ["one", true],
      ["two", true],
    ]);

    await restored.send(groupId, "three");
    const seen = (await settle([bob])).get(bob)!;
    expect(seen.filter((e) => e.type === "undecryptable")).toEqual([]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual([
      "before the copy",
      "one",
      "two",
      "three",
    ]);
  });

  it("a send before any read reads the hub first, and so uses none of those keys either", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "s");
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    await alice.send(groupId, "one");
    await alice.historyWritten();

    await restore(alice.dir, copy);
    const restored = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    await restored.send(groupId, "two");
    // What that read brought waits for whoever asks (the CLI's send prints it).
    expect(errors(restored.takeEvents()).join("\n")).toMatch(/older than messages it sent/);
    const seen = (await settle([bob])).get(bob)!;
    expect(seen.filter((e) => e.type === "undecryptable")).toEqual([]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["one", "two"]);
  });

  it("after a commit of its own it cannot follow, says so, and sends nothing", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "c");
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    await alice.selfUpdate(groupId);
    await bob.send(groupId, "after the update");

    await restore(alice.dir, copy);
    const restored = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const events = await restored.sync();
    expect(errors(events).join("\n")).toMatch(/older than a commit it sent/);
    const health = restored.groups().find((g) => g.groupId === groupId)!;
    expect(health.condition).toBe("needs_readd");
    expect(health.advice).toMatch(/restored from an older copy/);
    await expect(restored.send(groupId, "lost")).rejects.toThrow(/restored from an older copy/);

    // The remedy the advice names: a member gives the device a fresh start, and it takes part again.
    // bob has not read alice's last commit yet (his message went out in the epoch before, which the hub
    // still takes): it wins over his re-add, and changed her leaf, so nothing is done and he is told.
    const first = await bob.readdDevices(groupId, [restored.deviceId]);
    expect(first).toMatchObject({ removed: [], added: [], skipped: [{ deviceId: restored.deviceId }] });
    const { removed, added, skipped } = await bob.readdDevices(groupId, [restored.deviceId]);
    expect([removed.length, added.length, skipped.length]).toEqual([1, 1, 0]);
    await settle([restored, bob]);
    expect(restored.groups().find((g) => g.groupId === groupId)).toMatchObject({ condition: "ok" });
    await restored.send(groupId, "back again");
    await settle([restored, bob]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["after the update", "back again"]);
  });

  it("the CLI's send shows what its read of the hub brought, also when the send is then refused", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "cli");
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    await bob.send(groupId, "did you get this?");
    await alice.selfUpdate(groupId);

    await restore(alice.dir, copy);
    const map = JSON.stringify({ "a.test": { ...a.urls, mastodon: a.mastodon.url } });
    const io = capturedIo();
    const code = await main(["--dir", alice.dir, "--services-map", map, "send", groupId, "lost"], io);
    expect(code).not.toBe(0);
    expect(io.stderr.join("\n")).toMatch(/restored from an older copy/);
    // The read before the send took bob's message and found the copy: both are said now (before: the
    // send's refusal only; bob's message was processed and acknowledged, so no later sync shows it).
    expect(io.stderr.join("\n")).toContain("bobcli@a.test: did you get this?");
    expect(io.stderr.join("\n")).toMatch(/older than a commit it sent/);
    // Not on stdout, where the result of the send goes (the events a send fetches go to stderr, like
    // those of `groups`, `members`, `history` and of naming a group not known yet).
    expect(io.stdout).toEqual([]);
    const again = capturedIo();
    expect(await main(["--dir", alice.dir, "--services-map", map, "sync"], again)).toBe(0);
    expect(again.stdout.join("\n")).not.toContain("did you get this?");
  });

  it("the CLI's send prints only its result on stdout; what its read of the hub brought goes to stderr", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "out");
    await alice.send(groupId, "hello bob");
    const map = JSON.stringify({ "a.test": { ...a.urls, mastodon: a.mastodon.url } });
    const io = capturedIo();
    expect(await main(["--dir", bob.dir, "--services-map", map, "send", groupId, "hi"], io)).toBe(0);
    // Before: alice's message on stdout, ahead of the result (a script reading the number got it too).
    expect(io.stdout).toEqual([expect.stringMatching(/^sent \(#\d+\)$/)]);
    expect(io.stderr.join("\n")).toContain("aliceout@a.test: hello bob");
  });

  it("reads back a message it sent for an epoch the group had just left, too", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "p");
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    // bob's commit comes first; alice, who has not read it, sends for the epoch before, which the hub
    // still takes (the epoch window): the history of hers that the copy does not hold has it.
    await bob.selfUpdate(groupId);
    const late = await alice.send(groupId, "crossing bob's update");
    expect(late.epoch).toBeLessThan(bob.epoch(groupId));
    await alice.historyWritten();

    await restore(alice.dir, copy);
    const restored = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    await restored.sync();
    expect((await notes(restored, groupId)).map((n) => [n.text, n.own])).toEqual([
      ["crossing bob's update", true],
    ]);
  });

  it("after a commit of its own it cannot follow, says so of each later message instead of keeping it", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "k");
    const copy = `${alice.dir}.copy`;
    await cp(alice.dir, copy, { recursive: true });
    await alice.selfUpdate(groupId);
    await bob.sync();
    await bob.send(groupId, "past the copy");

    await restore(alice.dir, copy);
    const restored = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const events = await restored.sync();
    expect(restored.groups().find((g) => g.groupId === groupId)!.condition).toBe("needs_readd");
    // bob's message is for the epoch alice's own commit opened, which this copy can never reach (before:
    // kept in group.json, up to 4 MB rewritten with every save, until a re-add dropped it unread).
    expect(events.filter((e) => e.type === "undecryptable")).toEqual([
      expect.objectContaining({ groupId, reason: expect.stringMatching(/older than a commit it sent/) }),
    ]);
    const ctx = (restored as unknown as { ctx: DeviceContext }).ctx;
    expect(ctx.groups.get(groupId)!.record.buffered).toEqual([]);
  });
});
