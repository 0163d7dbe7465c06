import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestDirectory, type TestDirectory } from "./testing/directory.js";
import { manualClock, startHub, type TestHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";
import { StreamClient } from "./testing/stream.js";

// The hub re-checks the accounts of its open streams every DIRECTORY_CACHE_SECONDS (setInterval), a few
// at a time. A pass that took longer than that (many accounts, a directory timing out at 5 s each few)
// overlapped the next, and the next: each asking the directory again for the same stale accounts.

const MINUTE = 60_000;

describe("stream re-checks", () => {
  const clock = manualClock();
  let directory: TestDirectory;
  let hub: TestHub;
  beforeAll(async () => {
    directory = await startTestDirectory();
    hub = await startHub("memory", { directory, now: clock.now });
  });
  afterAll(async () => {
    await hub.close();
    await directory.close();
  });

  it("a re-check asked for while one is running joins it instead of starting another pass", async () => {
    // More accounts than a pass asks about at once (8).
    const devices = await Promise.all(Array.from({ length: 10 }, (_, i) => TestDevice.create(`user${i}`)));
    await directory.register(...devices);
    const streams = await Promise.all(devices.map((d) => StreamClient.open(hub.url, d.signer)));
    clock.advance(MINUTE);
    const dir = hub.delivery.context.directory!;
    const asked: string[] = [];
    const refresh = dir.refresh.bind(dir);
    dir.refresh = (acct: string) => {
      asked.push(acct);
      return refresh(acct);
    };
    await Promise.all([
      hub.delivery.recheckStreams(),
      hub.delivery.recheckStreams(),
      hub.delivery.recheckStreams(),
    ]);
    expect(asked.length).toBe(10);
    expect(new Set(asked).size).toBe(10);
    for (const s of streams) s.close();
  });
});
