import { cipherSuite } from "@mastodon-mls/bridge";
import fc from "fast-check";
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  decodeGroupState,
  emptyPskIndex,
  encodeGroupState,
  processMessage,
  type ClientState,
} from "ts-mls";
import { beforeAll, describe, expect, it } from "vitest";
import { localDevice, twoMemberGroup } from "../testSupport/localDevices.js";
import { encodeGroupStateCached } from "./stateEncoder.js";

// The cached encoder must give exactly ts-mls's bytes for every state, whatever it shares with states
// encoded before: group states written by it are read back with ts-mls's decoder, and earlier files were
// written by ts-mls's encoder.

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

let start: ClientState;
let bob: ClientState;
beforeAll(async () => {
  ({ alice: start, bob } = await twoMemberGroup());
});

type Step = "add" | "update" | "remove" | "send" | "receive" | "reload";

/** Applies one change to alice's state, as a member would see it happen. */
async function step(alice: ClientState, s: Step): Promise<ClientState> {
  const cs = await cipherSuite();
  switch (s) {
    case "add": {
      const kp = await (
        await localDevice(`acct:m${Math.random().toString(36).slice(2, 8)}@a.test`)
      ).keyPackage();
      const r = await createCommit(
        { state: alice, cipherSuite: cs },
        { extraProposals: [{ proposalType: "add", add: { keyPackage: kp.publicPackage } }] },
      );
      return r.newState;
    }
    case "update":
      return (await createCommit({ state: alice, cipherSuite: cs }, {})).newState;
    case "remove": {
      const own = alice.privatePath.leafIndex;
      const leaves = alice.ratchetTree.flatMap((n, i) =>
        n?.nodeType === "leaf" && i / 2 !== own ? [i / 2] : [],
      );
      if (leaves.length === 0) return alice;
      const r = await createCommit(
        { state: alice, cipherSuite: cs },
        { extraProposals: [{ proposalType: "remove", remove: { removed: leaves[leaves.length - 1]! } }] },
      );
      return r.newState;
    }
    case "send":
      return (await createApplicationMessage(alice, new Uint8Array([7]), cs)).newState;
    case "receive": {
      if (bob.groupContext.epoch !== alice.groupContext.epoch) return alice;
      const sent = await createApplicationMessage(bob, new Uint8Array([8]), cs);
      bob = sent.newState;
      const got = await processMessage(
        { wireformat: "mls_private_message", privateMessage: sent.privateMessage },
        alice,
        emptyPskIndex,
        acceptAll,
        cs,
      );
      return got.newState;
    }
    case "reload": {
      const bytes = encodeGroupState(alice);
      return { ...decodeGroupState(bytes, 0)![0], clientConfig: alice.clientConfig };
    }
  }
}

describe("encodeGroupStateCached", () => {
  it("gives ts-mls's encodeGroupState bytes for every state of any sequence of changes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom<Step>("add", "update", "remove", "send", "receive", "reload"), {
          minLength: 1,
          maxLength: 7,
        }),
        async (steps) => {
          let alice = start;
          expect(hex(encodeGroupStateCached(alice))).toBe(hex(encodeGroupState(alice)));
          for (const s of steps) {
            alice = await step(alice, s);
            // Twice: the second time every node comes from the cache.
            expect(hex(encodeGroupStateCached(alice)), s).toBe(hex(encodeGroupState(alice)));
            expect(hex(encodeGroupStateCached(alice)), s).toBe(hex(encodeGroupState(alice)));
          }
          expect(alice.historicalReceiverData.size).toBeLessThanOrEqual(2);
        },
      ),
      { numRuns: 15 },
    );
  });

  it("encodes a larger tree with blank nodes and past epochs exactly as ts-mls does", async () => {
    let alice = start;
    for (const s of ["add", "add", "add", "add", "remove", "update", "add", "remove", "send"] as const) {
      alice = await step(alice, s);
    }
    expect(alice.ratchetTree.some((n) => n === undefined)).toBe(true);
    expect(alice.historicalReceiverData.size).toBeGreaterThan(0);
    expect(hex(encodeGroupStateCached(alice))).toBe(hex(encodeGroupState(alice)));
  });
});
