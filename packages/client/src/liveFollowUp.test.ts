import { fromBase64url } from "@mastodon-mls/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { MlsDmClient } from "./client.js";
import type { DmEvent } from "./events.js";
import { decodeMessage } from "./mls/codec.js";
import type { Exchange, ProxiedRequest, StandIn } from "./testSupport/hubProxy.js";
import { newClient, useProxiedHub } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// DESIGN §9: a member holding proposals commits them within 30 s. gina listens (`events()`); hank leaves;
// gina's commit of his Remove is refused once by the hub (a proxy in front of the real delivery service
// answers in its place). Nothing else happens in the group — no item arrives that would make gina try
// again — yet the commit lands: the follow-up timer (an interval injected short) retries it.

const env = useProxiedHub();
const { proxy } = env;

afterEach(() => {
  proxy.intercept = () => undefined;
});

/** A submission of an MLS commit (not a proposal, not an application message) to the group. */
function isCommit(groupId: string, req: { method: string; path: string; body: Buffer }): boolean {
  if (req.method !== "POST" || req.path !== `/v1/groups/${groupId}/messages`) return false;
  const { message } = JSON.parse(req.body.toString("utf8")) as { message: string };
  const m = decodeMessage(fromBase64url(message));
  return m.wireformat === "mls_public_message" && m.publicMessage.content.contentType === "commit";
}

/** The events a live client yields, collected in the background, with a way to await one. */
function listen(client: MlsDmClient, opts: { followUpIntervalMs: number; proposalHoldMs?: () => number }) {
  const controller = new AbortController();
  const seen: DmEvent[] = [];
  const watchers: { match: (e: DmEvent) => boolean; resolve: (e: DmEvent) => void }[] = [];
  const done = (async () => {
    for await (const e of client.events({ signal: controller.signal, ...opts })) {
      seen.push(e);
      for (const w of [...watchers]) {
        if (!w.match(e)) continue;
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(e);
      }
    }
  })();
  return {
    seen,
    next(match: (e: DmEvent) => boolean): Promise<DmEvent> {
      const already = seen.find(match);
      if (already !== undefined) return Promise.resolve(already);
      return new Promise((resolve) => watchers.push({ match, resolve }));
    },
    async stop(): Promise<void> {
      controller.abort();
      await done;
    },
  };
}

let run = 0;
const refusals: [string, StandIn][] = [
  // A 5xx: the hub may have taken it; the commit stays pending and is posted again, byte for byte.
  [
    "unavailable for a moment (outcome unknown)",
    { status: 503, body: { error: "store_unavailable", message: "down for a moment" } },
  ],
  // A 4xx: this commit is dropped; the proposals are still held and committed anew.
  [
    "rate limited (refused)",
    { status: 429, body: { error: "rate_limited", message: "slow down", retry_after: 1 } },
  ],
];

describe("the follow-up timer of events()", () => {
  it.each(refusals)(
    "commits a leave proposal after the hub refused the first commit, %s, with no new item arriving",
    { timeout: 60_000 },
    async (_, refusal) => {
      const { a, b, resolver } = env;
      const n = ++run;
      const gina = await newClient(a, `gina${n}`, resolver);
      const hank = await newClient(a, `hank${n}`, resolver);
      const ivy = await newClient(b, `ivy${n}`, resolver);
      const { groupId } = await gina.createGroup([hank.acct, ivy.acct]);
      await settle([hank, ivy, gina]);
      const before = gina.epoch(groupId);

      let refused: ProxiedRequest | undefined;
      proxy.intercept = (req) => {
        if (refused !== undefined || !isCommit(groupId, req)) return undefined;
        refused = req;
        return refusal;
      };
      const posts = () => proxy.exchanges.filter((e) => e.path === `/v1/groups/${groupId}/messages`);
      const postsBefore = posts().length;
      const since = proxy.exchanges.length;

      const live = listen(gina, { followUpIntervalMs: 100 });
      try {
        await hank.leave(groupId);
        await live.next((e) => e.type === "member_leaving" && e.groupId === groupId);
        const failed = await live.next(
          (e) => e.type === "error" && e.groupId === groupId && e.operation === "commit received proposals",
        );
        const landed: Exchange = await proxy.waitFor(
          (e) => e.forwarded && e.status === 201 && isCommit(groupId, e),
          since,
        );
        await gina.refresh(); // after the operation that posted it

        // The hub saw hank's proposal, the refused commit, and the commit it took — nothing else.
        expect(
          posts()
            .slice(postsBefore)
            .map((e) => [e.forwarded, e.status]),
        ).toEqual([
          [true, 201],
          [false, refusal.status],
          [true, 201],
        ]);
        if (refusal.status >= 500) {
          expect(failed).toMatchObject({ message: expect.stringMatching(/kept and will be settled/) });
          expect(landed.body.equals(refused!.body)).toBe(true);
        }
        expect(gina.epoch(groupId)).toBe(before + 1);
        expect(gina.members(groupId).map((m) => m.acct)).not.toContain(hank.acct);
      } finally {
        await live.stop();
      }
      const ivySaw = await ivy.sync();
      expect(ivySaw.filter((e) => e.type === "error" || e.type === "undecryptable")).toEqual([]);
      expect(ivy.epoch(groupId)).toBe(before + 1);
      expect(ivy.epochAuthenticator(groupId)).toBe(gina.epochAuthenticator(groupId));
    },
  );

  it(
    "spreads the commits of listening members: the one whose wait ends first commits a leave, the other then has nothing to commit",
    { timeout: 60_000 },
    async () => {
      const { a, resolver } = env;
      const n = ++run;
      const gina = await newClient(a, `gina${n}`, resolver);
      const jack = await newClient(a, `jack${n}`, resolver);
      const hank = await newClient(a, `hank${n}`, resolver);
      const { groupId } = await gina.createGroup([jack.acct, hank.acct]);
      await settle([jack, hank, gina]);
      const before = gina.epoch(groupId);
      const since = proxy.exchanges.length;
      const commits = () => proxy.exchanges.slice(since).filter((e) => isCommit(groupId, e));

      // Waits drawn by each client (injected here; at random up to 3 s by default).
      const liveGina = listen(gina, { followUpIntervalMs: 30_000, proposalHoldMs: () => 0 });
      const liveJack = listen(jack, { followUpIntervalMs: 30_000, proposalHoldMs: () => 5_000 });
      try {
        await hank.leave(groupId);
        // gina's wait is over at once: she commits (her own commit brings her no event).
        await proxy.waitFor((e) => e.forwarded && e.status === 201 && isCommit(groupId, e), since);
        await liveJack.next((e) => e.type === "member_removed" && e.groupId === groupId);
        // jack saw the proposal, began his wait, and then gina's commit ended it: nothing left to commit.
        const holds = (jack as unknown as { ctx: { proposalHolds: Map<string, number> } }).ctx.proposalHolds;
        await vi.waitFor(() => expect(holds.has(groupId)).toBe(false), { timeout: 10_000 });
        expect(commits().map((e) => [e.forwarded, e.status])).toEqual([[true, 201]]);
        await jack.refresh();
        expect(jack.epoch(groupId)).toBe(before + 1);
      } finally {
        await liveGina.stop();
        await liveJack.stop();
      }
    },
  );
});
