import { expect, it } from "vitest";
import { newClient, useOneInstance } from "../testSupport/instances.js";
import { linkDeviceApproved } from "../testSupport/linking.js";

// LNK-12 (found by an audit): the new device trusts the account key its home instance's profile and home
// directory vouch for (LNK-8). Hostile together, they could certify it under a key of their own, and
// nothing at link time let the person notice. Now the approving device says which account key certified
// the device and the linked device which one it pinned: the two fingerprints are compared on both screens.

const env = useOneInstance();

it(
  "LNK-12: the approval and the linked device show the same account-key fingerprint, the account's",
  {
    timeout: 60_000,
  },
  async () => {
    const { a, resolver } = env;
    const alice = await newClient(a, "alice", resolver, 1);
    const { device: phone, approval } = await linkDeviceApproved(alice, a, "alice", resolver);
    expect(approval.accountKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(approval.accountKey).toBe(alice.accountKeyFingerprint);
    expect(phone.holdsAccountKey).toBe(false);
    expect(phone.accountKeyFingerprint).toBe(approval.accountKey);
  },
);
