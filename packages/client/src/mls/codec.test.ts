import { cipherSuite } from "@mastodon-mls/bridge";
import fc from "fast-check";
import { acceptAll, createApplicationMessage, emptyPskIndex, processMessage, type ClientState } from "ts-mls";
import { toBase64url } from "@mastodon-mls/protocol";
import { encodeGroupStateWithoutTree } from "ts-mls/clientState.js";
import { beforeAll, describe, expect, it } from "vitest";
import { twoMemberGroup } from "../testSupport/localDevices.js";
import { changedSecretNodes, decodeState, decodeStateDelta, encodeState, encodeStateDelta } from "./codec.js";

// A group's state on disk is a base snapshot plus a delta (context.ts saveGroup): what is read back must
// be exactly the state that was written, whatever messages moved which ratchets in between, and a
// damaged delta must be refused rather than give a state that differs from the one saved.

let alice0: ClientState;
let bob0: ClientState;
beforeAll(async () => {
  ({ alice: alice0, bob: bob0 } = await twoMemberGroup());
});

/** Sends `n` messages from alice and `m` from bob, each processed by the other; returns both states. */
async function talk(alice: ClientState, bob: ClientState, turns: boolean[]) {
  const cs = await cipherSuite();
  for (const fromAlice of turns) {
    const [from, to] = fromAlice ? [alice, bob] : [bob, alice];
    const sent = await createApplicationMessage(from, new Uint8Array([1, 2, 3]), cs);
    const got = await processMessage(
      { wireformat: "mls_private_message", privateMessage: sent.privateMessage },
      to,
      emptyPskIndex,
      acceptAll,
      cs,
    );
    if (got.kind !== "applicationMessage") throw new Error("not an application message");
    if (fromAlice) [alice, bob] = [sent.newState, got.newState];
    else [bob, alice] = [sent.newState, got.newState];
  }
  return { alice, bob };
}

const whole = (s: ClientState) => encodeState({ ...s });

describe("group state delta", () => {
  it("reads back exactly the state written, after any sequence of sent and received messages", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.boolean(), { maxLength: 6 }), async (turns) => {
        // The base as it would be on disk: decoded from its encoding, as after a restart.
        const base = decodeState(encodeState(alice0));
        const { alice } = await talk(base, bob0, turns);
        const delta = encodeStateDelta(alice, base.secretTree);
        // Only the nodes a message moved: alice's leaf (node 0) when she sent, bob's (node 2) when she received.
        const expected = [...new Set(turns.map((a) => (a ? 0 : 2)))].sort();
        expect(delta.secretNodes.map(([i]) => i)).toEqual(expected);
        const read = decodeStateDelta(delta.state, decodeState(encodeState(base)), delta.secretNodes);
        expect(whole(read)).toBe(whole(alice));
      }),
      { numRuns: 12 },
    );
  });

  it("counts as changed only the nodes that are other objects than the base's", async () => {
    const { alice } = await talk(alice0, bob0, [true, true, false]);
    expect(changedSecretNodes(alice, alice0.secretTree)).toEqual([0, 2]);
    expect(changedSecretNodes(alice0, alice0.secretTree)).toEqual([]);
    // A tree of another size (another epoch's): every node.
    expect(changedSecretNodes(alice, alice0.secretTree.slice(0, 1))).toEqual([0, 1, 2]);
  });

  it("refuses a node outside the tree, a damaged node, and a delta that carries a whole secret tree too", async () => {
    const { alice } = await talk(alice0, bob0, [true]);
    const delta = encodeStateDelta(alice, alice0.secretTree);
    const node = delta.secretNodes[0]![1];
    const base = decodeState(encodeState(alice0));
    expect(() => decodeStateDelta(delta.state, base, [[3, node]])).toThrow(/outside the tree/);
    expect(() => decodeStateDelta(delta.state, base, [[-1, node]])).toThrow(/outside the tree/);
    expect(() => decodeStateDelta(delta.state, base, [[0, node.slice(0, -4)]])).toThrow();
    expect(() => decodeStateDelta(delta.state, base, [[0, `${node}AAAA`]])).toThrow(/damaged/);
    expect(() => decodeStateDelta(delta.state.slice(0, -8), base, delta.secretNodes)).toThrow();
    // The new delta without its nodes (as an earlier release would read it): no secret tree at all.
    expect(() => decodeStateDelta(delta.state, base)).toThrow(/no secret tree/);
    // An earlier file's delta (the whole secret tree inside), given nodes as well.
    const oldStyle = toBase64url(
      encodeGroupStateWithoutTree({ ...alice, historicalReceiverData: new Map() }),
    );
    expect(() => decodeStateDelta(oldStyle, base, delta.secretNodes)).toThrow(/two secret trees/);
    expect(whole(decodeStateDelta(oldStyle, base))).toBe(whole(alice));
  });
});
