import { describe, expect, it } from "vitest";
import { useRedis } from "@mastodon-mls/testkit/vitest";
import { randomGroupId } from "./testing/flow.js";
import { startHub } from "./testing/hub.js";
import { TestDevice } from "./testing/mls.js";

// A Redis that is killed closes its connections, and commands fail at once (limits.test.ts). One that
// stops answering without closing them (a host that froze or fell off the network: no RST) left every
// command waiting, and with it every request, for as long as TCP took to give up (many minutes).

const own = useRedis({ mode: "process" });

/** `promise`'s outcome, or "pending" if it has none within `ms`. */
const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, new Promise<"pending">((r) => setTimeout(() => r("pending"), ms))]);

describe("while Redis does not answer", () => {
  it("answers 503 store_unavailable in seconds, not never, and serves again once it answers", async () => {
    const hub = await startHub("redis", { redis: own() });
    const pid = own().pid!;
    try {
      const alice = await TestDevice.create("alice");
      const id = randomGroupId();
      await alice.startGroup(id.bytes);
      expect((await hub.client(alice).createGroup(id.text)).status).toBe(201);
      process.kill(pid, "SIGSTOP");
      const inbox = await within(hub.client(alice).request("GET", "/v1/inbox"), 10_000);
      expect(inbox).toMatchObject({ status: 503, body: { error: "store_unavailable" } });
      const ready = await within(fetch(`${hub.url}/readyz`), 10_000);
      expect(ready === "pending" ? ready : ready.status).toBe(503);
      process.kill(pid, "SIGCONT");
      expect((await hub.client(alice).submit(id.text, await alice.encrypt("back"))).status).toBe(201);
    } finally {
      process.kill(pid, "SIGCONT");
      await hub.close();
    }
  }, 60_000);
});
