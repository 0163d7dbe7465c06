import { toBase64url } from "@mastodon-mls/protocol";
import { createApplicationMessage, createCommit, encodeMlsMessage } from "ts-mls";
import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import type { DeviceContext } from "./context.js";
import type { DmEvent } from "./events.js";
import { notes } from "./testSupport/history.js";
import { ServiceUnavailableError } from "./errors.js";
import { FAST_RETRY, aliceAndBob, useProxiedHub } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// D23 with a hub that lies about who sent what (docs/decisions.md D23, restoredCopy.test.ts for the
// honest case). The hub labels each item with the device that posted it, but that is its word only
// (FORK-1): it holds no member's key. A commit of the epoch this device is in, labelled as its own,
// makes it give up on the group (`needs_readd`, "restored from an older copy") only if the commit
// carries this device's own signature.

const env = useProxiedHub();

const errors = (events: DmEvent[]) => events.flatMap((e) => (e.type === "error" ? [e.message] : []));

/** Inbox answers as the hub would give them with every item of `from` labelled as sent by `to`. */
function relabel(from: string, to: string) {
  return (req: { path: string }, status: number, body: Buffer): Buffer => {
    if (!/^\/v1\/inbox(\?|$)/.test(req.path) || status !== 200) return body;
    const page = JSON.parse(body.toString("utf8")) as { items: { sender?: string }[] };
    for (const item of page.items) if (item.sender === from) item.sender = to;
    return Buffer.from(JSON.stringify(page));
  };
}

/** Inbox answers with `items` added to the first page that has room, once. */
function inject(items: Record<string, unknown>[]) {
  let left = items;
  return (req: { path: string }, status: number, body: Buffer): Buffer => {
    if (!/^\/v1\/inbox(\?|$)/.test(req.path) || status !== 200 || left.length === 0) return body;
    const page = JSON.parse(body.toString("utf8")) as { items: unknown[]; cursor: string };
    page.items.push(...left.map((i) => ({ ...i, cursor: page.cursor })));
    left = [];
    return Buffer.from(JSON.stringify(page));
  };
}

const ctxOf = (c: MlsDmClient) => (c as unknown as { ctx: DeviceContext }).ctx;

/** `client`'s sync with the hub's inbox answers passed through `rewrite`; forwarded as they are after. */
async function syncRewritten(
  client: MlsDmClient,
  rewrite: (req: { path: string }, status: number, body: Buffer) => Buffer,
): Promise<DmEvent[]> {
  env.proxy.rewriteBody = rewrite;
  try {
    return await client.sync();
  } finally {
    env.proxy.rewriteBody = (_req, _status, body) => body;
  }
}

/** The group's next log item as the hub would hand it out, carrying `message` and labelled as `client`'s. */
async function nextItemAs(client: MlsDmClient, groupId: string, message: Uint8Array) {
  return {
    kind: "message",
    group_id: groupId,
    seq: (await env.a.delivery.context.store.groupStatus(groupId))!.seq + 1,
    epoch: client.epoch(groupId),
    sender: client.deviceId,
    message: toBase64url(message),
  };
}

describe("an own commit the hub makes up", () => {
  it("another member's commit labelled as this device's own is processed as theirs: not taken for a restored copy", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "l");
    await bob.selfUpdate(groupId);

    const events = await syncRewritten(alice, relabel(bob.deviceId, alice.deviceId));
    // Before: "older than a commit it sent", needs_readd with the advice to have the device re-added, and
    // every later message of the group buffered for ever — on the hub's word alone.
    expect(errors(events).join("\n")).not.toMatch(/older than a commit it sent/);
    expect(alice.groups().find((g) => g.groupId === groupId)).toMatchObject({ condition: "ok" });
    expect(alice.epoch(groupId)).toBe(bob.epoch(groupId));
    await alice.send(groupId, "still here");
    await settle([alice, bob]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["still here"]);
  });

  it("a commit labelled as this device's own that it did not sign is a fork the hub names, not a restored copy (FORK-1)", async () => {
    const { a, resolver } = env;
    const { alice, groupId } = await aliceAndBob(a, resolver, "m");
    // What a hub can make: a commit of alice's for this epoch (built from her state, never posted) with
    // one byte of its signature changed — the hub holds no member's key, so it cannot sign one.
    const state = ctxOf(alice).groups.get(groupId)!.state!;
    const built = await createCommit({ state, cipherSuite: ctxOf(alice).cs }, { wireAsPublicMessage: true });
    if (built.commit.wireformat !== "mls_public_message") throw new Error("not a PublicMessage");
    built.commit.publicMessage.auth.signature[0]! ^= 0x80;
    const item = await nextItemAs(alice, groupId, encodeMlsMessage(built.commit));
    const events = await syncRewritten(alice, inject([item]));
    // Before: "restored from an older copy", believed on the hub's word.
    expect(errors(events).join("\n")).not.toMatch(/older than a commit it sent/);
    const health = alice.groups().find((g) => g.groupId === groupId)!;
    expect(health.advice).not.toMatch(/restored from an older copy/);
    expect(health.advice).toContain("its signature did not verify");
  });
});

describe("own messages of an epoch left, that the history holds", () => {
  it("sent while a commit of its own was pending are not read back again, nor taken for a restored copy", async () => {
    const { a, resolver, proxy } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "p");
    const messages = `/v1/groups/${groupId}/messages`;
    // The hub takes alice's self-update, and its answer is lost: the commit stays pending, with the
    // state it leads to, made now.
    proxy.replaceAnswer = (req, status) => {
      if (req.method !== "POST" || req.path !== messages || status !== 201) return undefined;
      proxy.replaceAnswer = () => undefined;
      return { status: 502, body: "bad gateway" };
    };
    await expect(alice.selfUpdate(groupId)).rejects.toThrow(/kept and will be settled/);
    // Sent meanwhile, for the epoch the commit ended (the hub still takes it): its generation is past
    // the one the pending state holds for that epoch, and its history line is written.
    await alice.send(groupId, "while pending");
    await alice.historyWritten();

    const events = await alice.sync();
    expect(errors(events).join("\n")).not.toMatch(/older than messages it sent/);
    expect(events.filter((e) => e.type === "message")).toEqual([]);
    expect((await notes(alice, groupId)).map((n) => n.text)).toEqual(["while pending"]);
    await settle([alice, bob]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["while pending"]);
  });

  it("a message in this device's name that it did not sign is undecryptable, not taken for a restored copy", async () => {
    const { a, resolver } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "f");
    // bob, a member, holds the epoch's secrets: he can encrypt under alice's leaf, at the generation she
    // hands out next, but sign only with his own key; the hub labels it as alice's.
    const bobState = ctxOf(bob).groups.get(groupId)!.state!;
    const aliceLeaf = ctxOf(alice).groups.get(groupId)!.state!.privatePath.leafIndex;
    const forged = await createApplicationMessage(
      { ...bobState, privatePath: { ...bobState.privatePath, leafIndex: aliceLeaf } },
      new TextEncoder().encode("not alice"),
      ctxOf(bob).cs,
    );
    const item = await nextItemAs(
      alice,
      groupId,
      encodeMlsMessage({
        version: "mls10",
        wireformat: "mls_private_message",
        privateMessage: forged.privateMessage,
      }),
    );
    const events = await syncRewritten(alice, inject([item]));
    expect(events.filter((e) => e.type === "undecryptable")).toHaveLength(1);
    // Before: also "older than messages it sent (was its directory restored from an older copy?)".
    expect(errors(events).join("\n")).not.toMatch(/older than messages it sent/);
    await alice.send(groupId, "mine");
    const seen = (await settle([alice, bob])).get(bob)!;
    expect(seen.filter((e) => e.type === "undecryptable")).toEqual([]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["mine"]);
  });
});

describe("the read of the hub before a process's first send", () => {
  it("a hub that does not answer it is not posted to: nothing is encrypted, one wait instead of two", async () => {
    const { a, resolver, proxy } = env;
    const { alice, bob, groupId } = await aliceAndBob(a, resolver, "q");
    // Another process on alice's directory: it has not read the hub yet.
    const later = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
    const since = proxy.exchanges.length;
    proxy.drop = (req) => /^\/v1\/inbox(\?|$)/.test(req.path);
    try {
      await expect(later.send(groupId, "lost?")).rejects.toBeInstanceOf(ServiceUnavailableError);
    } finally {
      proxy.drop = () => false;
    }
    const posted = proxy.exchanges
      .slice(since)
      .filter((e) => e.method === "POST" && e.path.endsWith("/messages"));
    expect(posted).toEqual([]);
    expect(ctxOf(later).group(groupId).record.outbox ?? []).toEqual([]);
    // Once the hub answers again, the same process sends.
    await later.send(groupId, "now");
    await settle([bob]);
    expect((await notes(bob, groupId)).map((n) => n.text)).toEqual(["now"]);
  });
});
