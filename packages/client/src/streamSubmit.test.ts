import { describe, expect, it } from "vitest";
import type { MlsDmClient } from "./client.js";
import { newClient, useProxiedHub } from "./testSupport/instances.js";
import { notes } from "./testSupport/history.js";
import { nextMatching } from "./testSupport/liveEvents.js";
import { settle } from "./testSupport/settle.js";

// D6 on the client: while `events()` holds a hub's stream open, an application message goes over that
// stream (a `submit` frame) instead of a signed HTTP request of its own. Against a real hub behind a
// proxy that sees every HTTP request (the stream's WebSocket passes through it untouched).

const env = useProxiedHub();
const { proxy } = env;

const texts = async (c: MlsDmClient, groupId: string) =>
  (await notes(c, groupId)).map(({ text, own }) => ({ text, own }));

const posts = (groupId: string) =>
  proxy.exchanges.filter((e) => e.method === "POST" && e.path === `/v1/groups/${groupId}/messages`).length;

describe("a message sent while events() is open", () => {
  it("goes over the hub's stream (no request of its own); the others read it, the sender's history has it once; without the stream it is posted", async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "streamalice", resolver);
    const bob = await newClient(b, "streambob", resolver);
    const { groupId } = await alice.createGroup(["@streambob@b.test"]);
    await settle([alice, bob]);

    const abort = new AbortController();
    const live = alice.events({ signal: abort.signal });
    // A message pushed to alice proves her stream is authenticated (items come only after `ready`).
    const pushed = nextMatching(live, (e) => e.type === "message" && e.groupId === groupId);
    await bob.send(groupId, "are you there?");
    await pushed;

    const before = posts(groupId);
    const sent = await alice.send(groupId, "over the stream");
    expect(posts(groupId)).toBe(before);
    expect(sent.seq).toBeGreaterThan(0);
    await alice.historyWritten();

    abort.abort();
    await live.return(undefined);
    await alice.send(groupId, "over HTTP");
    expect(posts(groupId)).toBe(before + 1);

    await settle([alice, bob]);
    expect((await texts(bob, groupId)).map((t) => t.text)).toEqual([
      "are you there?",
      "over the stream",
      "over HTTP",
    ]);
    expect(await texts(alice, groupId)).toEqual([
      { text: "are you there?", own: false },
      { text: "over the stream", own: true },
      { text: "over HTTP", own: true },
    ]);
  });
});
