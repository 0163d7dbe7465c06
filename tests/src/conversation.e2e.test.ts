import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import type { MlsDmClient } from "@mastodon-mls/client";
import { fromBase64url } from "@mastodon-mls/protocol";
import {
  acceptAll,
  decodeGroupState,
  decodeMlsMessage,
  emptyPskIndex,
  processMessage,
  type ClientState,
  type GroupState,
} from "ts-mls";
import { decodeGroupStateWithoutTree } from "ts-mls/clientState.js";
import { decodeSecretTreeNode } from "ts-mls/secretTree.js";
import { settle, startWorld, texts, type StoreKind, type World } from "./harness.js";

// The foundation's end-to-end test (issue 2): alice (a.test) creates a group with bob (a.test) and carol
// (b.test); all three read each other; carol is removed and cannot decrypt what follows, not even from her
// stored state; bob self-updates and everyone agrees on the epoch authenticator; every client is restarted
// from disk midway (and, on Redis, both services too). Real services, real ts-mls, real HTTP.

/**
 * A persisted group state as it is on disk, decoded with nothing but ts-mls: the base snapshot group.json
 * names (tree, past epochs, secret tree) with group.json's delta on it and the secret-tree nodes it lists
 * in place (packages/client README "What is persisted where"). The stores in this test are unencrypted.
 */
async function storedState(client: MlsDmClient, groupId: string): Promise<ClientState> {
  const dir = join(client.dir, "groups", groupId);
  const record = JSON.parse(await readFile(join(dir, "group.json"), "utf8")) as {
    state: string;
    stateBase?: string;
    secretNodes?: [number, string][];
  };
  let state: GroupState;
  if (record.stateBase === undefined) {
    state = decodeGroupState(fromBase64url(record.state), 0)![0];
  } else {
    const base = JSON.parse(await readFile(join(dir, `base-${record.stateBase}.json`), "utf8")) as {
      state: string;
    };
    const [whole] = decodeGroupState(fromBase64url(base.state), 0)!;
    const [delta] = decodeGroupStateWithoutTree(whole.ratchetTree)(fromBase64url(record.state), 0)!;
    let secretTree = delta.secretTree;
    if (record.secretNodes !== undefined) {
      secretTree = whole.secretTree.slice();
      for (const [i, node] of record.secretNodes)
        secretTree[i] = decodeSecretTreeNode(fromBase64url(node), 0)![0];
    }
    state = { ...delta, secretTree, historicalReceiverData: whole.historicalReceiverData };
  }
  return { ...state, clientConfig: profileClientConfig() };
}

async function canDecrypt(state: ClientState, message: Uint8Array): Promise<boolean> {
  const decoded = decodeMlsMessage(message, 0)?.[0];
  if (
    !decoded ||
    (decoded.wireformat !== "mls_private_message" && decoded.wireformat !== "mls_public_message")
  )
    return false;
  try {
    const result = await processMessage(decoded, state, emptyPskIndex, acceptAll, await cipherSuite());
    return result.kind === "applicationMessage";
  } catch {
    return false;
  }
}

/**
 * What the hub stored for each message, read right after it was accepted: the hub deletes log entries
 * once every member device has acknowledged them (retention), so the test looks before that happens.
 */
const captured: Uint8Array[] = [];
async function sendAndCapture(world: World, client: MlsDmClient, groupId: string, text: string) {
  const sent = await client.send(groupId, text);
  const [entry] = await world.a.delivery.context.store.readLog(groupId, sent.seq, sent.seq);
  if (!entry) throw new Error(`the hub holds no entry for seq ${sent.seq}`);
  captured.push(entry.message);
  return { sent, entry };
}

describe.each<StoreKind>(["memory", "redis"])("a conversation across two instances (%s store)", (store) => {
  let world: World;
  let alice: MlsDmClient;
  let bob: MlsDmClient;
  let carol: MlsDmClient;
  let groupId: string;

  beforeAll(async () => {
    captured.length = 0;
    world = await startWorld(store);
    [alice, bob, carol] = await Promise.all([
      world.device(world.a, "alice"),
      world.device(world.a, "bob"),
      world.device(world.b, "carol"),
    ]);
  });
  afterAll(() => world?.close());

  it("alice creates the group; bob and carol join through their home services", async () => {
    const created = await alice.createGroup(["@bob@a.test", "@carol@b.test"]);
    groupId = created.groupId;
    const events = await settle([alice, bob, carol]);
    expect(events.get(bob)).toContainEqual(expect.objectContaining({ type: "joined", groupId }));
    expect(events.get(carol)).toContainEqual(
      expect.objectContaining({ type: "joined", groupId, hub: world.a.urls.delivery }),
    );
    for (const c of [alice, bob, carol]) {
      expect(
        c
          .members(groupId)
          .map((m) => m.acct)
          .sort(),
      ).toEqual(["alice@a.test", "bob@a.test", "carol@b.test"]);
      // Every account published its device list and profile proof at set-up: all verify.
      expect(c.members(groupId).every((m) => m.status === "verified")).toBe(true);
    }
    expect(new Set([alice, bob, carol].map((c) => c.epochAuthenticator(groupId))).size).toBe(1);
  });

  it("all three read each other's messages", async () => {
    await sendAndCapture(world, alice, groupId, "hello from alice");
    await sendAndCapture(world, bob, groupId, "hello from bob");
    await sendAndCapture(world, carol, groupId, "hello from carol");
    const events = await settle([alice, bob, carol]);
    expect(texts(events.get(alice))).toEqual([
      "bob@a.test: hello from bob",
      "carol@b.test: hello from carol",
    ]);
    expect(texts(events.get(bob))).toEqual([
      "alice@a.test: hello from alice",
      "carol@b.test: hello from carol",
    ]);
    expect(texts(events.get(carol))).toEqual([
      "alice@a.test: hello from alice",
      "bob@a.test: hello from bob",
    ]);
  });

  it("every client restarts from disk midway and carries on", async () => {
    if (store === "redis") {
      await world.a.restartServices();
      await world.b.restartServices();
    }
    [alice, bob, carol] = await Promise.all([world.reopen(alice), world.reopen(bob), world.reopen(carol)]);
    await sendAndCapture(world, bob, groupId, "after the restart");
    const events = await settle([alice, bob, carol]);
    expect(texts(events.get(alice))).toEqual(["bob@a.test: after the restart"]);
    expect(texts(events.get(carol))).toEqual(["bob@a.test: after the restart"]);
    expect((await alice.history(groupId)).length).toBeGreaterThanOrEqual(4);
  });

  it("carol is removed and cannot decrypt what follows, not even from her stored state", async () => {
    const carolsState = await storedState(carol, groupId);
    await alice.removeMembers(groupId, ["carol@b.test"]);
    const removal = await settle([alice, bob, carol]);
    expect(removal.get(carol)).toContainEqual(
      expect.objectContaining({ type: "removed_from_group", groupId }),
    );

    const bobsState = await storedState(bob, groupId);
    const { entry } = await sendAndCapture(world, alice, groupId, "carol must not read this");
    const after = await settle([alice, bob, carol]);
    expect(texts(after.get(bob))).toEqual(["alice@a.test: carol must not read this"]);
    expect(texts(after.get(carol))).toEqual([]);
    expect(carol.groups().find((g) => g.groupId === groupId)?.status).toBe("left");

    // Her state from before the removal cannot open it; neither can anything on her disk now.
    expect(await canDecrypt(carolsState, entry.message)).toBe(false);
    // The control: bob's stored state from the same moment does decrypt it, so the check itself is sound.
    expect(await canDecrypt(bobsState, entry.message)).toBe(true);
  });

  it("bob self-updates and alice and bob agree on the epoch authenticator", async () => {
    const before = alice.epoch(groupId);
    await bob.selfUpdate(groupId);
    await settle([alice, bob, carol]);
    expect(alice.epoch(groupId)).toBe(before + 1);
    expect(bob.epoch(groupId)).toBe(before + 1);
    expect(alice.epochAuthenticator(groupId)).toBe(bob.epochAuthenticator(groupId));
    await sendAndCapture(world, alice, groupId, "still talking");
    expect(texts((await settle([alice, bob])).get(bob))).toEqual(["alice@a.test: still talking"]);
  });

  it("the hub stored ciphertext only", async () => {
    const hub = world.a.delivery.context.store;
    const group = (await hub.loadGroup(groupId))!;
    // Whatever is still in the log (retention may have deleted acknowledged entries), plus every
    // application message as it was stored the moment it was accepted.
    const stored = [...(await hub.readLog(groupId, 1, group.seq)).map((e) => e.message), ...captured];
    expect(captured.length).toBeGreaterThanOrEqual(6);
    for (const text of ["hello from", "after the restart", "carol must not", "still talking"]) {
      expect(stored.some((m) => Buffer.from(m).includes(text))).toBe(false);
    }
  });
});
