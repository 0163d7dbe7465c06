import { cpSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import type { DmEvent } from "./events.js";
import { NOT_SENT_AFTER_MS } from "./groups/outbox.js";
import { LOCK_FILE } from "./store/lock.js";
import { HubProxy, type ProxiedRequest, type StandIn } from "./testSupport/hubProxy.js";
import {
  FAST_RETRY,
  newClient,
  startWithProxiedHub,
  stopProxied,
  type Instance,
} from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";
import type { StaticResolver } from "./transport/resolver.js";

// A sent message is on disk (the group's outbox, with the state that encrypted it) before it is posted,
// and its history line is made durable in the background (groups/outbox.ts). Against a real hub behind a
// proxy: a device whose disk is frozen while its post is on the way, restarted from that disk, finds its
// message in its history if the hub accepted it, and is told it was not sent if the hub never did.

let a: Instance;
let b: Instance;
const proxy = new HubProxy();
let resolver: StaticResolver;

beforeAll(async () => {
  ({ a, b, resolver } = await startWithProxiedHub(proxy));
});
afterAll(() => stopProxied(proxy, [a, b]));

const texts = async (c: MlsDmClient, groupId: string) =>
  (await c.history(groupId)).flatMap((h) =>
    h.content.kind === "activity" && h.content.activity.type === "Create"
      ? [{ text: h.content.activity.object.content, seq: h.seq, own: h.own }]
      : [],
  );

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

const notSent = (events: DmEvent[]) => events.filter((e) => e.type === "not_sent");

describe("sent messages survive a crash", () => {
  it("a device stopped after the hub accepted its message, before its history line, finds it there on restart", async () => {
    const alice = await newClient(a, "alice1", resolver);
    const bob = await newClient(b, "bob1", resolver);
    const { groupId } = await alice.createGroup(["@bob1@b.test"]);
    await settle([alice, bob]);

    const frozen = `${alice.dir}-frozen`;
    freezeAtNextPost(alice, groupId, frozen, () => undefined);
    const sent = await alice.send(groupId, "kept");

    const restarted = await MlsDmClient.open(frozen, { services: resolver, retry: FAST_RETRY });
    // The disk holds the state and the outbox, not the line: the device had not got the answer yet.
    expect(await texts(restarted, groupId)).toEqual([]);
    const events = await restarted.sync();
    expect(notSent(events)).toEqual([]);
    expect(await texts(restarted, groupId)).toEqual([{ text: "kept", seq: sent.seq, own: true }]);
    await bob.sync();
    expect((await texts(bob, groupId)).map((m) => m.text)).toEqual(["kept"]);

    // The restarted device goes on under the next key generation, and both read each other.
    await restarted.send(groupId, "after");
    await bob.send(groupId, "welcome back");
    await settle([restarted, bob]);
    expect((await texts(bob, groupId)).map((m) => m.text)).toEqual(["kept", "after", "welcome back"]);
    expect((await texts(restarted, groupId)).map((m) => m.text)).toEqual(["kept", "after", "welcome back"]);
  });

  it("a message whose post never reached the hub is reported not sent on restart, once it cannot arrive any more", async () => {
    const alice = await newClient(a, "alice2", resolver);
    const bob = await newClient(b, "bob2", resolver);
    const { groupId } = await alice.createGroup(["@bob2@b.test"]);
    await settle([alice, bob]);

    const frozen = `${alice.dir}-frozen`;
    freezeAtNextPost(alice, groupId, frozen, () => ({ status: 503, body: { down: true } }));
    await expect(alice.send(groupId, "lost")).rejects.toThrow();

    let now = Date.now();
    const restarted = await MlsDmClient.open(frozen, {
      services: resolver,
      retry: FAST_RETRY,
      clock: () => now,
    });
    // Too recent: a post of the dead process could still be on its way.
    expect(notSent(await restarted.sync())).toEqual([]);
    now += NOT_SENT_AFTER_MS + 1000;
    const events = notSent(await restarted.sync());
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event).toMatchObject({ type: "not_sent", groupId });
    expect(
      event?.type === "not_sent" && event.activity.type === "Create" && event.activity.object.content,
    ).toBe("lost");
    // Told once; nobody has it; the device sends on.
    expect(notSent(await restarted.sync())).toEqual([]);
    expect(await texts(restarted, groupId)).toEqual([]);
    await restarted.send(groupId, "again");
    await settle([restarted, bob]);
    expect((await texts(bob, groupId)).map((m) => m.text)).toEqual(["again"]);
  });

  it("a post that got no answer is settled by its echo in the same process: in the history once, not reported", async () => {
    const alice = await newClient(a, "alice3", resolver);
    const bob = await newClient(b, "bob3", resolver);
    const { groupId } = await alice.createGroup(["@bob3@b.test"]);
    await settle([alice, bob]);

    // The hub accepts the post, and the answer is lost on the way back (a gateway error instead).
    proxy.replaceAnswer = (req, status) => {
      if (!isPost(req, groupId) || status !== 201) return undefined;
      proxy.replaceAnswer = () => undefined;
      return { status: 502, body: "bad gateway" };
    };
    await expect(alice.send(groupId, "echoed")).rejects.toThrow();
    expect(await texts(alice, groupId)).toEqual([]);

    // The next read brings the echo: the line is written with the hub's number; nothing is reported,
    // also once the message is old enough to be.
    const events = await alice.sync();
    expect(notSent(events)).toEqual([]);
    await bob.sync();
    const [received] = await texts(bob, groupId);
    expect(received?.text).toBe("echoed");
    expect(await texts(alice, groupId)).toEqual([{ text: "echoed", seq: received!.seq, own: true }]);
  });

  it("normal sending writes each line once, and the outbox empties", async () => {
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
    expect((await texts(alice, groupId)).map((m) => m.text)).toEqual(["one", "two", "three"]);
    const record = JSON.parse(readFileSync(join(alice.dir, "groups", groupId, "group.json"), "utf8")) as {
      outbox?: unknown[];
    };
    expect(record.outbox ?? []).toEqual([]);
  });
});
