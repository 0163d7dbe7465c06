import { describe, expect, it } from "vitest";
import { newClient, useOneInstance } from "./testSupport/instances.js";

// Issue 4 "the client tops up below a threshold", against a real directory and hub: KeyPackages used by
// Welcomes are replaced on the device's own once the directory holds fewer than half its target.

const env = useOneInstance();

describe("KeyPackage top-up", () => {
  it(
    "refills to the target after Welcomes use KeyPackages below half of it, and not before",
    { timeout: 60_000 },
    async () => {
      const { a, resolver } = env;
      const alice = await newClient(a, "alice", resolver, 4);
      const bob = await newClient(a, "bob", resolver, 1);
      const carol = await newClient(a, "carol", resolver, 1);
      const dave = await newClient(a, "dave", resolver, 1);
      const count = () => alice.keyPackageCount();
      expect(await count()).toBe(4);

      // One Welcome: 3 left, not below half of 4: nothing uploaded.
      await bob.createGroup(["@alice@a.test"]);
      expect((await alice.sync()).some((e) => e.type === "joined")).toBe(true);
      expect(await count()).toBe(3);
      // Two more: 1 left, below half: the device fills up to 4 while processing them.
      await carol.createGroup(["@alice@a.test"]);
      await dave.createGroup(["@alice@a.test"]);
      expect((await alice.sync()).filter((e) => e.type === "joined")).toHaveLength(2);
      expect(await count()).toBe(4);
      expect(await alice.refillKeyPackages()).toBe(0);
    },
  );
});
