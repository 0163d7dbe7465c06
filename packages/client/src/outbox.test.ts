import { spawnSync } from "node:child_process";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { NOT_SENT_AFTER_MS } from "./groups/outbox.js";
import { GENERATION_FILE } from "./store/deviceStore.js";
import { LOCK_FILE } from "./store/lock.js";
import type { ProxiedRequest, StandIn } from "./testSupport/hubProxy.js";
import { FAST_RETRY, newClient, useProxiedHub } from "./testSupport/instances.js";
import { notes } from "./testSupport/history.js";
import { settle } from "./testSupport/settle.js";

// A sent message is on disk (the group's outbox, with the state that encrypted it) before it is posted,
// and its history line is made durable in the background (groups/outbox.ts). Against a real hub behind a
// proxy: a device whose disk is frozen while its post is on the way, restarted from that disk, finds its
// message in its history if the hub accepted it, and is told it was not sent if the hub never did.

const env = useProxiedHub();
const { proxy } = env;

afterEach(() => {
  proxy.intercept = () => undefined;
  proxy.replaceAnswer = () => undefined;
});

/** A later start of the device in `dir`, `minutes` from now by its clock. */
const reopen = (dir: string, minutes = 0) =>
  MlsDmClient.open(dir, {
    services: env.resolver,
    retry: FAST_RETRY,
    clock: () => Date.now() + minutes * 60_000,
  });

/** The group's outbox as its file holds it (the test devices' files are plain JSON). */
const outboxOnDisk = (dir: string, groupId: string) =>
  (
    JSON.parse(readFileSync(join(dir, "groups", groupId, "group.json"), "utf8")) as {
      outbox?: { seq?: number }[];
    }
  ).outbox ?? [];

const departPendingOnDisk = (dir: string, groupId: string) =>
  (
    JSON.parse(readFileSync(join(dir, "groups", groupId, "group.json"), "utf8")) as {
      departPendingSince?: number;
    }
  ).departPendingSince !== undefined;

const LATE = NOT_SENT_AFTER_MS / 60_000 + 1;

const isPost = (req: ProxiedRequest, groupId: string) =>
  req.method === "POST" && req.path === `/v1/groups/${groupId}/messages`;

/**
 * While the next message post of `groupId` is on its way, copies the device directory as it is at that
 * instant (its lock aside: that process is gone), then lets `answer` decide the post.
 */
function freezeAtNextPost(
  client: MlsDmClient,
  groupId: string,
  copy: string,
  answer: () => StandIn | undefined,
): void {
  proxy.intercept = (req) => {
    if (!isPost(req, groupId)) return undefined;
    proxy.intercept = () => undefined;
    cpSync(client.dir, copy, { recursive: true, filter: (src) => !src.endsWith(LOCK_FILE) });
    return answer();
  };
}

/** The hub accepts the next message post of `groupId`, and its answer is lost (a gateway error instead). */
function loseNextAnswer(groupId: string): void {
  proxy.replaceAnswer = (req, status) => {
    if (!isPost(req, groupId) || status !== 201) return undefined;
    proxy.replaceAnswer = () => undefined;
    return { status: 502, body: "bad gateway" };
  };
}

const notSent = (events: DmEvent[]) => events.filter((e) => e.type === "not_sent");

describe("sent messages survive a crash", () => {
  it("a device stopped after the hub accepted its message, before its history line, finds it there on restart", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice1", resolver);
    const bob = await newClient(b, "bob1", resolver);
    const { groupId } = await alice.createGroup(["@bob1@b.test"]);
    await settle([alice, bob]);

    const frozen = `${alice.dir}-frozen`;
    freezeAtNextPost(alice, groupId, frozen, () => undefined);
    const sent = await alice.send(groupId, "kept");

    // The disk holds the state and the outbox, not the line: the device had not got the answer yet.
    expect(outboxOnDisk(frozen, groupId)).toHaveLength(1);
    const restarted = await reopen(frozen);
    expect(await notes(restarted, groupId)).toEqual([]);
    const events = await restarted.sync();
    expect(notSent(events)).toEqual([]);
    expect(await notes(restarted, groupId)).toEqual([{ text: "kept", seq: sent.seq, own: true }]);
    expect(outboxOnDisk(frozen, groupId)).toEqual([]);
    await bob.sync();
    expect((await notes(bob, groupId)).map((m) => m.text)).toEqual(["kept"]);

    // The restarted device goes on under the next key generation, and both read each other.
    await restarted.send(groupId, "after");
    await bob.send(groupId, "welcome back");
    await settle([restarted, bob]);
    expect((await notes(bob, groupId)).map((m) => m.text)).toEqual(["kept", "after", "welcome back"]);
    expect((await notes(restarted, groupId)).map((m) => m.text)).toEqual(["kept", "after", "welcome back"]);
  });

  it("a message whose post never reached the hub is reported not sent on restart, once it cannot arrive any more", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice2", resolver);
    const bob = await newClient(b, "bob2", resolver);
    const { groupId } = await alice.createGroup(["@bob2@b.test"]);
    await settle([alice, bob]);

    const frozen = `${alice.dir}-frozen`;
    freezeAtNextPost(alice, groupId, frozen, () => ({ status: 503, body: { down: true } }));
    await expect(alice.send(groupId, "lost")).rejects.toMatchObject({ code: "message_outcome_unknown" });

    let now = Date.now();
    const restarted = await MlsDmClient.open(frozen, {
      services: resolver,
      retry: FAST_RETRY,
      clock: () => now,
    });
    // Too recent: a post of the dead process could still be on its way.
    expect(notSent(await restarted.sync())).toEqual([]);
    expect(outboxOnDisk(frozen, groupId)).toHaveLength(1);
    now += NOT_SENT_AFTER_MS + 1000;
    const events = notSent(await restarted.sync());
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event).toMatchObject({ type: "not_sent", groupId });
    expect(
      event?.type === "not_sent" && event.activity.type === "Create" && event.activity.object.content,
    ).toBe("lost");
    // Told once; nobody has it; the device sends on.
    expect(outboxOnDisk(frozen, groupId)).toEqual([]);
    expect(notSent(await restarted.sync())).toEqual([]);
    expect(await notes(restarted, groupId)).toEqual([]);
    await restarted.send(groupId, "again");
    await settle([restarted, bob]);
    expect((await notes(bob, groupId)).map((m) => m.text)).toEqual(["again"]);
  });

  it("a post that got no answer is settled by its echo: in the history once, never reported, however late", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice3", resolver);
    const bob = await newClient(b, "bob3", resolver);
    const { groupId } = await alice.createGroup(["@bob3@b.test"]);
    await settle([alice, bob]);

    loseNextAnswer(groupId);
    await expect(alice.send(groupId, "echoed")).rejects.toMatchObject({ code: "message_outcome_unknown" });
    expect(await notes(alice, groupId)).toEqual([]);
    expect(outboxOnDisk(alice.dir, groupId)).toHaveLength(1);

    // The next read, long after (the device started again later): the echo writes the line with the
    // hub's number, and nothing is reported although the message is old enough to be.
    const later = await reopen(alice.dir, LATE);
    expect(notSent(await later.sync())).toEqual([]);
    await bob.sync();
    const [received] = await notes(bob, groupId);
    expect(received?.text).toBe("echoed");
    expect(await notes(later, groupId)).toEqual([{ text: "echoed", seq: received!.seq, own: true }]);
    expect(outboxOnDisk(alice.dir, groupId)).toEqual([]);
  });

  it("an entry that knows the hub's number, its line and echo gone, gets its line back from a full read", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice5", resolver);
    const bob = await newClient(b, "bob5", resolver);
    const { groupId } = await alice.createGroup(["@bob5@b.test"]);
    await settle([alice, bob]);
    const sent = await alice.send(groupId, "numbered");
    await alice.historyWritten();
    await settle([alice, bob]); // the echo is read and acknowledged

    // What a crash can leave: the entry saved with its number (after the 201), the line not yet written.
    const dir = alice.dir;
    const historyPath = join(dir, "groups", groupId, "history.jsonl");
    const [line] = readFileSync(historyPath, "utf8")
      .split("\n")
      .filter((l) => l !== "");
    const { entry } = JSON.parse(line!) as { entry: { at: string; content: { activity: unknown } } };
    writeFileSync(historyPath, "");
    const groupPath = join(dir, "groups", groupId, "group.json");
    const record = JSON.parse(readFileSync(groupPath, "utf8")) as Record<string, unknown>;
    record.outbox = [{ hash: "A".repeat(43), at: entry.at, activity: entry.content.activity, seq: sent.seq }];
    writeFileSync(groupPath, JSON.stringify(record));

    const later = await reopen(dir, LATE);
    expect(notSent(await later.sync())).toEqual([]);
    expect(await notes(later, groupId)).toEqual([{ text: "numbered", seq: sent.seq, own: true }]);
    expect(outboxOnDisk(dir, groupId)).toEqual([]);
  });

  it("a refused post leaves the outbox at once and is never reported later", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice6", resolver);
    const bob = await newClient(b, "bob6", resolver);
    const { groupId } = await alice.createGroup(["@bob6@b.test"]);
    await settle([alice, bob]);
    proxy.intercept = (req) =>
      isPost(req, groupId)
        ? {
            status: 403,
            body: { error: "not_a_member", message: "This device is not a member of the group." },
          }
        : undefined;
    await expect(alice.send(groupId, "refused")).rejects.toThrow(/member/i);
    proxy.intercept = () => undefined;
    expect(outboxOnDisk(alice.dir, groupId)).toEqual([]);
    const later = await reopen(alice.dir, LATE);
    expect(notSent(await later.sync())).toEqual([]);
    expect(await notes(later, groupId)).toEqual([]);
  });

  it("an echo read while the line's flush is pending, after a re-read from disk, still leaves the number on disk", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice7", resolver);
    const bob = await newClient(b, "bob7", resolver);
    const { groupId } = await alice.createGroup(["@bob7@b.test"]);
    await settle([alice, bob]);

    // The background fsync of the line is held until the test lets it go.
    const store = (alice as unknown as { ctx: DeviceContext }).ctx.store;
    const flush = store.flushHistory.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    store.flushHistory = async (id: string) => {
      await gate;
      return flush(id);
    };
    const sent = await alice.send(groupId, "delivered");
    // Another process wrote to the directory: alice's next operation re-reads the group from disk (where
    // the entry has no number yet), then reads her own echo while the flush still waits.
    writeFileSync(join(alice.dir, GENERATION_FILE), "another process");
    await alice.sync();
    expect(outboxOnDisk(alice.dir, groupId)).toEqual([expect.objectContaining({ seq: sent.seq })]);
    release();
    await alice.historyWritten();

    // alice stops there. Started again long after: nothing is reported, the line is there once.
    const later = await reopen(alice.dir, LATE);
    expect(notSent(await later.sync())).toEqual([]);
    expect(await notes(later, groupId)).toEqual([{ text: "delivered", seq: sent.seq, own: true }]);
  });

  it("the echo of a post whose answer was lost settles it after the device left the group", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice8", resolver);
    const bob = await newClient(b, "bob8", resolver);
    const { groupId } = await alice.createGroup(["@bob8@b.test"]);
    await settle([alice, bob]);
    loseNextAnswer(groupId);
    await expect(alice.send(groupId, "said before leaving")).rejects.toThrow();
    await alice.leave(groupId);
    // Not left at the hub yet (D17): its echo is still to come, and after a departure it would not.
    const hub = a.delivery.context.store;
    expect(await hub.memberships(groupId, alice.deviceId)).toBeDefined();
    expect(departPendingOnDisk(alice.dir, groupId)).toBe(true);

    const later = await reopen(alice.dir, LATE);
    expect(notSent(await later.sync())).toEqual([]);
    // The echo read, the departure goes.
    expect(await hub.memberships(groupId, alice.deviceId)).toBeUndefined();
    expect(departPendingOnDisk(alice.dir, groupId)).toBe(false);
    await bob.sync();
    expect((await notes(bob, groupId)).map((m) => m.text)).toEqual(["said before leaving"]);
    expect((await notes(later, groupId)).map((m) => m.text)).toEqual(["said before leaving"]);
    expect(outboxOnDisk(alice.dir, groupId)).toEqual([]);
  });

  it("keeps reading a left group's hub, however old the invitation, while an own message there waits", async () => {
    const { a, b, resolver } = env;
    const carol = await newClient(a, "carol10", resolver);
    const dan = await newClient(b, "dan10", resolver);
    const { groupId } = await carol.createGroup(["@dan10@b.test"]); // hosted by a.test's hub
    await settle([carol, dan]);
    loseNextAnswer(groupId);
    await expect(dan.send(groupId, "said before leaving")).rejects.toThrow();
    await dan.leave(groupId);

    // Fifteen days on: a hub that hosts none of dan's groups and invited him that long ago is dropped
    // (INVITED_HUB_SECONDS), but not while his message there waits for its echo.
    const later = await reopen(dan.dir, 15 * 24 * 60);
    expect(notSent(await later.sync())).toEqual([]);
    expect((await notes(later, groupId)).map((m) => m.text)).toEqual(["said before leaving"]);
    expect(outboxOnDisk(dan.dir, groupId)).toEqual([]);
  });

  it("normal sending writes each line once, and the outbox empties", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice4", resolver);
    const bob = await newClient(b, "bob4", resolver);
    const { groupId } = await alice.createGroup(["@bob4@b.test"]);
    await settle([alice, bob]);
    for (const text of ["one", "two", "three"]) await alice.send(groupId, text);
    await alice.historyWritten();
    await settle([alice, bob]); // alice reads the echoes of her three messages
    const lines = readFileSync(join(alice.dir, "groups", groupId, "history.jsonl"), "utf8")
      .split("\n")
      .filter((l) => l !== "");
    expect(lines).toHaveLength(3);
    expect((await notes(alice, groupId)).map((m) => m.text)).toEqual(["one", "two", "three"]);
    expect(outboxOnDisk(alice.dir, groupId)).toEqual([]);
  });
});

describe("a process that dies holding the device's lock", () => {
  it("has announced its writes: another live process re-reads, and no key generation is used twice", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice9", resolver);
    const bob = await newClient(b, "bob9", resolver);
    const { groupId } = await alice.createGroup(["@bob9@b.test"]);
    await settle([alice, bob]);
    // A second process on the same directory (`mls-dm send` while `mls-dm listen` runs).
    const other = await reopen(alice.dir);
    await alice.sync(); // alice has seen the directory as it is now

    // `other` sends; its post is held at the hub's door once its state (ratchet moved on) is on disk.
    let releasePost!: () => void;
    const held = new Promise<undefined>((resolve) => (releasePost = () => resolve(undefined)));
    let posted!: () => void;
    const reached = new Promise<void>((resolve) => (posted = resolve));
    proxy.intercept = (req) => {
      if (!isPost(req, groupId)) return undefined;
      proxy.intercept = () => undefined;
      posted();
      return held;
    };
    const dying = other.send(groupId, "from the process that died").catch(() => undefined);
    await reached;
    // It dies there (killed): its lock names a process that no longer exists.
    const gone = Number(
      spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout,
    );
    writeFileSync(join(alice.dir, LOCK_FILE), JSON.stringify({ pid: gone, host: hostname(), token: "x" }));
    // Any command started now breaks the dead lock first (here: opening the directory), not alice.
    await reopen(alice.dir);
    await alice.send(groupId, "from the live process");
    releasePost();
    await dying;

    const events = await bob.sync();
    expect(events.filter((e) => e.type === "undecryptable")).toEqual([]);
    expect((await notes(bob, groupId)).map((m) => m.text).sort()).toEqual([
      "from the live process",
      "from the process that died",
    ]);
  });
});
