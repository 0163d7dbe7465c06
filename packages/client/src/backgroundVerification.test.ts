import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlsDmClient, type Member } from "./client.js";
import { HubProxy, type ProxiedRequest } from "./testSupport/hubProxy.js";
import {
  FAST_RETRY,
  newClient,
  startInstance,
  stopInstance,
  type Instance,
} from "./testSupport/instances.js";
import { linkDevice } from "./testSupport/linking.js";
import { settle } from "./testSupport/settle.js";
import { StaticResolver } from "./transport/resolver.js";

// DESIGN §2: profile and device-list lookups run in the background and only change the status shown.
// carol's Mastodon (c.test) is reached through a proxy that can hold her WebFinger requests: while it
// does, alice's device must go on — sync() in background mode returns, other operations run, live
// batches keep coming — and once it answers, the statuses follow. No timing: a held lookup is released
// only by the test, or by a guard that makes the test fail instead of hanging.

let a: Instance;
let c: Instance;
const mastodonC = new HubProxy();
let resolver: StaticResolver;

beforeAll(async () => {
  await mastodonC.start();
  [a, c] = await Promise.all([startInstance("a.test"), startInstance("c.test")]);
  mastodonC.target = c.mastodon.url;
  resolver = new StaticResolver({
    "a.test": { ...a.urls, mastodon: a.mastodon.url },
    "c.test": { ...c.urls, mastodon: mastodonC.url },
  });
});
afterAll(async () => {
  await Promise.all([a, c].map(stopInstance));
  await mastodonC.stop();
});

const GUARD_MS = 20_000;

/** Holds carol's WebFinger requests until `release()` (or the guard, which the test then reports). */
class LookupHold {
  released = false;
  guardFired = false;
  requests = 0;
  private release_!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.release_ = resolve));
  private arrived_!: () => void;
  /** Resolves when the first held request has reached the proxy. */
  readonly arrived = new Promise<void>((resolve) => (this.arrived_ = resolve));

  install(proxy: HubProxy, acct: string): void {
    proxy.intercept = async (req: ProxiedRequest) => {
      if (!req.path.startsWith("/.well-known/webfinger") || !req.path.includes(encodeURIComponent(acct))) {
        return undefined;
      }
      this.requests++;
      this.arrived_();
      const guard = setTimeout(() => {
        this.guardFired = true;
        this.release_();
      }, GUARD_MS);
      await this.gate;
      clearTimeout(guard);
      return undefined;
    };
  }

  release(): void {
    this.released = true;
    this.release_();
  }
}

/**
 * alice (a.test), carol and dave (c.test) in a group, all settled; then `later`, another process on alice's
 * directory (nothing looked up or verified yet in it), and carol's (or dave's) WebFinger requests held
 * from now on.
 */
async function carolHeld(opts: { held?: "carol" | "dave" } = {}): Promise<{
  carol: MlsDmClient;
  dave: MlsDmClient;
  groupId: string;
  later: MlsDmClient;
  hold: LookupHold;
}> {
  const alice = await newClient(a, `alice${Math.floor(Math.random() * 1e9)}`, resolver);
  const carol = await newClient(c, `carol${Math.floor(Math.random() * 1e9)}`, resolver);
  const dave = await newClient(c, `dave${Math.floor(Math.random() * 1e9)}`, resolver);
  const { groupId } = await alice.createGroup([carol.acct, dave.acct]);
  await settle([carol, dave, alice]);
  const later = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
  const hold = new LookupHold();
  hold.install(mastodonC, (opts.held ?? "carol") === "carol" ? carol.acct : dave.acct);
  return { carol, dave, groupId, later, hold };
}

function memberOf(client: MlsDmClient, groupId: string, acct: string): Member | undefined {
  return client.members(groupId).find((m) => m.acct === acct);
}

/** The status this process found itself (not one remembered from before it started). */
function statusOf(client: MlsDmClient, groupId: string, acct: string): string | undefined {
  const m = memberOf(client, groupId, acct);
  return m?.remembered === true ? "remembered" : m?.status;
}

describe("background verification", () => {
  afterAll(() => {
    mastodonC.intercept = () => undefined;
  });

  it(
    "sync({verification: 'background'}) returns while a lookup hangs; the device goes on; the statuses follow",
    { timeout: 60_000 },
    async () => {
      const { carol, groupId, later, hold } = await carolHeld();
      try {
        const events = await later.sync({ verification: "background" });
        expect(events.filter((e) => e.type === "error")).toEqual([]);
        await hold.arrived;
        // The lookup is out and held; the device's lock is not: another operation runs to the end.
        const sent = await later.send(groupId, "sent while carol's instance is slow");
        expect(sent.seq).toBeGreaterThan(0);
        // Not verified by this process yet: the status announced before it started, as remembered.
        expect(memberOf(later, groupId, carol.acct)).toMatchObject({ status: "verified", remembered: true });
        expect(hold.released).toBe(false);
        expect(hold.guardFired).toBe(false);
      } finally {
        hold.release();
      }
      await later.verificationSettled();
      expect(statusOf(later, groupId, carol.acct)).toBe("verified");
      // One fresh look per account per pass: the lookup made outside the lock is the one the verification
      // inside it uses (freshSince), not asked again.
      expect(hold.requests).toBe(1);
      expect((await later.sync()).filter((e) => e.type === "error")).toEqual([]);
    },
  );

  it(
    "sync() waits for the verification by default, and returns its events",
    { timeout: 60_000 },
    async () => {
      const { carol, groupId, later, hold } = await carolHeld();
      let returned = false;
      const syncing = later.sync().then((events) => {
        returned = true;
        return events;
      });
      await hold.arrived;
      expect(returned).toBe(false);
      hold.release();
      const events = await syncing;
      expect(hold.guardFired).toBe(false);
      expect(events.filter((e) => e.type === "error")).toEqual([]);
      expect(statusOf(later, groupId, carol.acct)).toBe("verified");
    },
  );

  it(
    "live batches keep coming while the verification that followed the first one waits for an instance",
    { timeout: 60_000 },
    async () => {
      const { carol, groupId, later, hold } = await carolHeld();
      const abort = new AbortController();
      const live = later.events({ signal: abort.signal });
      /** The next message's group and text. */
      const nextMessage = async (): Promise<{ groupId: string; content: string }> => {
        for (;;) {
          const { value, done } = await live.next();
          if (done === true) throw new Error("the live feed ended");
          if (value.type === "message") return { groupId: value.groupId, content: value.note.content };
        }
      };
      try {
        await carol.send(groupId, "one");
        expect(await nextMessage()).toEqual({ groupId, content: "one" });
        await hold.arrived;
        // The first batch's verification now waits for carol's instance; a second batch is not held up.
        await carol.send(groupId, "two");
        expect(await nextMessage()).toEqual({ groupId, content: "two" });
        expect(hold.released).toBe(false);
        expect(hold.guardFired).toBe(false);
      } finally {
        hold.release();
      }
      await later.verificationSettled();
      expect(statusOf(later, groupId, carol.acct)).toBe("verified");
      abort.abort();
      await live.return(undefined);
    },
  );

  it(
    "a device added while the pass's lookups were out is looked up anew, not judged by the older answers",
    { timeout: 90_000 },
    async () => {
      const { carol, groupId, later, hold } = await carolHeld({ held: "dave" });
      const carolName = carol.acct.split("@")[0]!;
      const since = mastodonC.exchanges.length;
      await later.sync({ verification: "background" });
      // carol's answers (device list: one device) are in; the pass waits for dave's instance.
      await mastodonC.waitFor((e) => e.path.includes(encodeURIComponent(carol.acct)), since);
      await hold.arrived;
      // Meanwhile carol links a phone (list v+1) and adds it; alice's device processes the Add.
      const phone = await linkDevice(carol, c, carolName, resolver);
      expect((await carol.addOwnDevices()).flatMap((r) => r.added)).toEqual([phone.deviceId]);
      await later.sync({ verification: "background" });
      // Until this process has verified carol: her first device shows the status recorded before, the
      // phone (added since) is vouched for by nothing yet.
      expect(later.members(groupId).filter((m) => m.acct === carol.acct)).toEqual([
        expect.objectContaining({ deviceId: carol.deviceId, status: "verified", remembered: true }),
        expect.objectContaining({ deviceId: phone.deviceId, status: "unverified" }),
      ]);
      expect(hold.released).toBe(false);
      hold.release();
      await later.verificationSettled();
      // The pass verified a tree with the phone in it: from answers made before the phone was listed it
      // would be `revoked` and removed. It was looked up again.
      const events = await later.sync();
      expect(events.filter((e) => e.type === "invalid_member" || e.type === "error")).toEqual([]);
      expect(later.members(groupId).filter((m) => m.acct === carol.acct)).toEqual([
        expect.objectContaining({ deviceId: carol.deviceId, status: "verified" }),
        expect.objectContaining({ deviceId: phone.deviceId, status: "verified" }),
      ]);
      expect(hold.guardFired).toBe(false);
    },
  );
});
