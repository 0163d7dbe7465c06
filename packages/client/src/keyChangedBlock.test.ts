import { publishProof } from "@mastodon-mls/bridge";
import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { FAST_RETRY, newClient, useTwoInstances } from "./testSupport/instances.js";
import { swapAccountKey } from "./testSupport/keySwap.js";
import { settle } from "./testSupport/settle.js";

// DESIGN §3: once a confirmed contact's key changed, nothing is sent to them until the user decides. The
// block followed the latest status, so the instance that swapped the key could lift it by hiding the
// profile field (`no-proof`) — then swap back (found by an audit). The pin now remembers it.

const env = useTwoInstances();

describe("the key-changed send block", () => {
  it(
    "is not lifted by the instance hiding the profile field; confirming or accepting a key lifts it",
    { timeout: 120_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice", resolver, 2);
      const bob = await newClient(b, "bob", resolver, 2);
      const { groupId } = await alice.createGroup(["@bob@b.test"]);
      await settle([bob, alice]);
      const sn = await alice.verify("@bob@b.test", { groupId });
      expect((await alice.confirmSafetyNumber("@bob@b.test", { typed: sn.safetyNumber!.text })).status).toBe(
        "verified-oob",
      );

      // bob's instance swaps in a key of its own (list, proof and a device under it).
      const { key: evilKey, token: bobToken } = await swapAccountKey(b, "bob", resolver);
      await alice.verifyMembers(groupId, { fresh: true });
      expect(alice.members(groupId).find((m) => m.acct === "bob@b.test")!.status).toBe("key-changed");
      await expect(alice.send(groupId, "is this still you?")).rejects.toMatchObject({ code: "not_verified" });

      // The instance hides the field: no-proof now, and still nothing goes out — also after a restart.
      const res = await fetch(`${b.mastodon.url}/api/v1/accounts/update_credentials`, {
        method: "PATCH",
        headers: { authorization: `Bearer ${bobToken}`, "content-type": "application/json" },
        body: JSON.stringify({ fields_attributes: [{ name: "Website", value: "example" }] }),
      });
      expect(res.status).toBe(200);
      await alice.verifyMembers(groupId, { fresh: true });
      expect(alice.members(groupId).find((m) => m.acct === "bob@b.test")!.status).toBe("no-proof");
      await expect(alice.send(groupId, "sent without any decision")).rejects.toMatchObject({
        code: "not_verified",
      });
      const again = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
      await expect(again.send(groupId, "after a restart")).rejects.toMatchObject({ code: "not_verified" });

      // alice decides: she accepts the key now served (after checking with bob); sending works again.
      await publishProof({
        mastodonUrl: b.mastodon.url,
        token: bobToken,
        acct: "bob@b.test",
        accountKey: evilKey,
        deviceListVersion: 10,
      });
      await again.acceptNewKey("@bob@b.test");
      await again.send(groupId, "decided");
    },
  );
});
