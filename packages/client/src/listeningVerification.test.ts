import { describe, expect, it, vi } from "vitest";
import type { MlsDmClient } from "./client.js";
import type { DmEvent } from "./events.js";
import { MemberVerifier } from "./identity/verifier.js";
import { newClient, useTwoInstances } from "./testSupport/instances.js";
import { nextMatching } from "./testSupport/liveEvents.js";
import { settle } from "./testSupport/settle.js";

// A listening device (`events()`) verifies its groups' members in the background after live traffic, but
// only when members may have changed (an epoch moved on, a group came or went) or the directory answers'
// lifetime has passed: a pass over the same members finds what the last one found and checks all their
// signatures again, which after every message cost a whole group's verification per message.

const env = useTwoInstances();

describe("a listening device", () => {
  it("does not verify the members again for each message, and does once the epoch moved on (also by its own operation)", async () => {
    const { a, b, resolver } = env;
    const alice: MlsDmClient = await newClient(a, "listenalice", resolver);
    const bob: MlsDmClient = await newClient(b, "listenbob", resolver);
    const { groupId } = await alice.createGroup(["@listenbob@b.test"]);
    await settle([alice, bob]);

    const abort = new AbortController();
    const live = alice.events({ signal: abort.signal });
    const isMessage = (e: DmEvent) => e.type === "message" && e.groupId === groupId;
    try {
      const first = nextMatching(live, isMessage);
      await bob.send(groupId, "first");
      await first; // its batch starts the first verification of this process
      await alice.verificationSettled();

      const verify = vi.spyOn(MemberVerifier.prototype, "verify");
      try {
        for (let i = 0; i < 5; i++) {
          const got = nextMatching(live, isMessage);
          await bob.send(groupId, `message ${i}`);
          await got;
        }
        await alice.verificationSettled();
        expect(verify).not.toHaveBeenCalled();

        // alice's own self-update (an operation, not a batch) moves the epoch on: the next batch's look
        // sees a change since the last pass, which then runs.
        await alice.selfUpdate(groupId);
        for (const text of ["after the update", "and one more"]) {
          // The second: a batch is processed only after the one before it has asked for its pass.
          const got = nextMatching(
            live,
            (e) => isMessage(e) && e.type === "message" && e.note.content === text,
          );
          await bob.send(groupId, text);
          await got;
        }
        await alice.verificationSettled();
        expect(verify).toHaveBeenCalled();
      } finally {
        verify.mockRestore();
      }
    } finally {
      abort.abort();
      await live.return(undefined);
    }
  });
});
