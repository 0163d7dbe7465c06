import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import type { DmEvent } from "./events.js";
import { FakeServices } from "./testSupport/fakeServices.js";
import { FAST_RETRY } from "./testSupport/instances.js";
import { localDevice } from "./testSupport/localDevices.js";

// A hub that is down while `events()` (mls-dm listen) polls it: one `error` event for the outage, not
// one every poll (every 5 s, for as long as it lasts, filling the terminal).

it("reports a hub that cannot be polled once per outage", { timeout: 30_000 }, async () => {
  const fake = new FakeServices();
  await fake.start();
  const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-outage-")), "d");
  const alice = await MlsDmClient.create({
    dir,
    acct: "alice@a.test",
    mastodonToken: "t",
    services: { directory: fake.url, delivery: fake.url },
    protection: { kind: "none" },
    keyPackages: 1,
    publishIdentity: false,
    retry: FAST_RETRY,
  });
  const bob = await localDevice("acct:bob@a.test");
  fake.keyPackages.set("bob@a.test", {
    deviceId: bob.deviceId,
    keyPackage: (await bob.keyPackage()).encoded,
  });
  await alice.createGroup(["bob@a.test"], { allowUnverified: true });
  await fake.stop();
  const controller = new AbortController();
  const errors: DmEvent[] = [];
  const stop = setTimeout(() => controller.abort(), 2_000);
  try {
    for await (const e of alice.events({
      signal: controller.signal,
      fallbackAfterFailures: 1,
      pollIntervalMs: 50,
    })) {
      if (e.type === "error" && e.operation.startsWith("poll ")) errors.push(e);
    }
  } finally {
    clearTimeout(stop);
  }
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatchObject({ operation: `poll ${fake.url}` });
  expect((errors[0] as { message: string }).message).toContain(
    `could not reach the delivery service at ${fake.url}`,
  );
});
