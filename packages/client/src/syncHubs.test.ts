import { randomBytes } from "node:crypto";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DmEvent } from "./events.js";
import { DeviceStore } from "./store/deviceStore.js";
import { HubProxy, type ProxiedRequest, type StandIn } from "./testSupport/hubProxy.js";
import { newClient, startInstance, stopInstance, type Instance } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";
import { DeliveryClient } from "./transport/deliveryClient.js";
import { StaticResolver } from "./transport/resolver.js";

// sync() asks every hub at once and processes the answers one hub after the other, in a fixed order while
// the hubs answer promptly; one that keeps its answer back lets those that answered go first.
// Shown without timing: the hubs hold their answers until every other hub of the gate has been asked,
// which a client asking them one after the other never gets to. dora (a.test) is in a group on b.test's
// hub and one on c.test's (each behind a proxy), and an invitation names a hub that is down.

let a: Instance;
let b: Instance;
let c: Instance;
const proxies = { b: new HubProxy(), c: new HubProxy() };
/** Stands in for a hub that is down: every request gets a 503 that is not our protocol. */
const down = new HubProxy();
let resolver: StaticResolver;

beforeAll(async () => {
  await Promise.all([proxies.b.start(), proxies.c.start(), down.start()]);
  down.intercept = () => ({ status: 503, body: { down: true } });
  // The hubs behind proxies must check signatures against the origin clients use: the proxy's.
  [a, b, c] = await Promise.all([
    startInstance("a.test"),
    startInstance("b.test", { deliveryEnv: { PUBLIC_URL: proxies.b.url } }),
    startInstance("c.test", { deliveryEnv: { PUBLIC_URL: proxies.c.url } }),
  ]);
  proxies.b.target = b.urls.delivery;
  proxies.c.target = c.urls.delivery;
  resolver = new StaticResolver({
    "a.test": { ...a.urls, mastodon: a.mastodon.url },
    "b.test": { ...b.urls, delivery: proxies.b.url, mastodon: b.mastodon.url },
    "c.test": { ...c.urls, delivery: proxies.c.url, mastodon: c.mastodon.url },
  });
});
afterAll(async () => {
  await Promise.all([a, b, c].map(stopInstance));
  await Promise.all([proxies.b.stop(), proxies.c.stop(), down.stop()]);
});

/**
 * Holds the first inbox request each of `members` receives until all of them have received one. If that
 * never happens (hubs asked one after the other), each is answered 503 after `guardMs`, so the test
 * fails on its assertions instead of hanging; `overlapped` says whether the gate opened.
 */
class InboxGate {
  private readonly arrived = new Set<HubProxy>();
  private open!: () => void;
  private readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  overlapped = false;
  private timedOut = false;

  constructor(
    private readonly members: HubProxy[],
    guardMs = 15_000,
  ) {
    const guard = setTimeout(() => {
      this.timedOut = true;
      this.open();
    }, guardMs);
    void this.opened.then(() => clearTimeout(guard));
    for (const proxy of members) {
      const answer = proxy.intercept;
      proxy.intercept = async (req: ProxiedRequest): Promise<StandIn | undefined> => {
        if (req.method === "GET" && req.path.startsWith("/v1/inbox") && !this.arrived.has(proxy)) {
          this.arrived.add(proxy);
          if (this.arrived.size === this.members.length && !this.timedOut) {
            this.overlapped = true;
            this.open();
          }
          await this.opened;
          if (!this.overlapped) return { status: 503, body: { gate: "never opened" } };
        }
        return answer(req);
      };
    }
  }

  close(): void {
    this.open();
    for (const proxy of this.members) {
      if (proxy === down) proxy.intercept = () => ({ status: 503, body: { down: true } });
      else proxy.intercept = () => undefined;
    }
  }
}

/** The events that matter here, in order, readably. */
function story(events: DmEvent[]): string[] {
  return events.flatMap((e) => {
    if (e.type === "message") return [`${e.from}: ${e.note.content}`];
    if (e.type === "invitation") return [`invitation to ${e.hub}`];
    if (e.type === "error") return [`error: ${e.operation}`];
    return [];
  });
}

describe("sync() reads the hubs concurrently", () => {
  it(
    "asks every hub before any answers, processes them in a fixed order, and a hub that is down only gives an error",
    { timeout: 120_000 },
    async () => {
      const dora = await newClient(a, "dora", resolver);
      const bob = await newClient(b, "bob", resolver);
      const carol = await newClient(c, "carol", resolver);
      const onB = (await bob.createGroup(["dora@a.test"])).groupId;
      const onC = (await carol.createGroup(["dora@a.test"])).groupId;
      await settle([dora, bob, carol]);
      expect(dora.groups().map((g) => [g.groupId, g.hub])).toEqual(
        expect.arrayContaining([
          [onB, proxies.b.url],
          [onC, proxies.c.url],
        ]),
      );

      // bob invites dora to a group on a hub that is down; both groups get messages.
      const device = await (await DeviceStore.open(bob.dir)).readDevice();
      await new DeliveryClient(a.urls.delivery, {
        certificate: fromBase64url(device.certificate),
        signKey: fromBase64url(device.deviceKey.signKey),
      }).invite("dora@a.test", down.url, toBase64url(new Uint8Array(randomBytes(16))));
      for (const n of [1, 2, 3]) {
        await bob.send(onB, `b${n}`);
        await carol.send(onC, `c${n}`);
      }

      // b.test's and c.test's hubs answer only once both were asked. The invitation naming the hub that
      // is down arrives on a.test's: that hub is read in the same sync, after the others.
      let gate = new InboxGate([proxies.b, proxies.c]);
      let events: DmEvent[];
      try {
        events = await dora.sync();
      } finally {
        gate.close();
      }
      expect(gate.overlapped).toBe(true);
      expect(story(events)).toEqual([
        `invitation to ${down.url}`,
        "bob@b.test: b1",
        "bob@b.test: b2",
        "bob@b.test: b3",
        "carol@c.test: c1",
        "carol@c.test: c2",
        "carol@c.test: c3",
        `error: sync ${down.url}`,
      ]);
      const seqs = (groupId: string) =>
        events.flatMap((e) => (e.type === "message" && e.groupId === groupId ? [e.seq] : []));
      for (const g of [onB, onC]) expect(seqs(g)).toEqual([...seqs(g)].sort((x, y) => x - y));

      // Now the hub that is down is one of those read at once, between the two others.
      await bob.send(onB, "b4");
      await carol.send(onC, "c4");
      gate = new InboxGate([proxies.b, proxies.c, down]);
      try {
        events = await dora.sync();
      } finally {
        gate.close();
      }
      expect(gate.overlapped).toBe(true);
      expect(story(events)).toEqual(["bob@b.test: b4", "carol@c.test: c4", `error: sync ${down.url}`]);

      // Nothing was lost or repeated: the cursors moved on.
      expect(story(await dora.sync())).toEqual([`error: sync ${down.url}`]);
      const texts = async (groupId: string) =>
        (await dora.history(groupId)).flatMap((h) =>
          h.content.kind === "activity" && h.content.activity.type === "Create"
            ? [h.content.activity.object.content]
            : [],
        );
      expect(await texts(onB)).toEqual(["b1", "b2", "b3", "b4"]);
      expect(await texts(onC)).toEqual(["c1", "c2", "c3", "c4"]);
    },
  );

  it(
    "a hub that keeps its answer back does not hold up the hubs that answered",
    { timeout: 60_000 },
    async () => {
      const erin = await newClient(a, "erin", resolver);
      const fred = await newClient(b, "fred", resolver);
      const gina = await newClient(c, "gina", resolver);
      const onB = (await fred.createGroup(["erin@a.test"])).groupId; // first in erin's order of hubs
      const onC = (await gina.createGroup(["erin@a.test"])).groupId;
      await settle([erin, fred, gina]);
      await fred.send(onB, "held back");
      await gina.send(onC, "prompt");

      // b.test's hub keeps erin's inbox answer until c.test's hub has seen her acknowledge what it sent,
      // which a client that waits for b.test first never does (then the guard releases it, and the
      // assertion below fails).
      const acked = proxies.c.waitFor(
        (e) => e.method === "POST" && e.path.startsWith("/v1/inbox/ack"),
        proxies.c.exchanges.length,
      );
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      const guard = setTimeout(release, 20_000);
      proxies.b.intercept = async (req: ProxiedRequest) => {
        if (req.method === "GET" && req.path.startsWith("/v1/inbox")) await released;
        return undefined;
      };
      let held = true;
      void released.then(() => (held = false));
      let ackedWhileHeld = false;
      void acked.then(() => {
        ackedWhileHeld = held;
        release();
      });
      let events: DmEvent[];
      try {
        events = await erin.sync();
      } finally {
        clearTimeout(guard);
        release();
        proxies.b.intercept = () => undefined;
      }
      expect(ackedWhileHeld).toBe(true);
      expect(story(events)).toEqual(["gina@c.test: prompt", "fred@b.test: held back"]);
      expect(erin.groups().map((g) => g.groupId)).toEqual(expect.arrayContaining([onB, onC]));
    },
  );

  it("asks for a hub's next page while it processes the one before", { timeout: 60_000 }, async () => {
    const hana = await newClient(a, "hana", resolver);
    const ivan = await newClient(b, "ivan", resolver);
    const onB = (await ivan.createGroup(["hana@a.test"])).groupId;
    await settle([hana, ivan]);
    const sent = Array.from({ length: 120 }, (_, i) => `m${i}`); // more than a page (100 items)
    for (const text of sent) await ivan.send(onB, text);

    const asked: string[] = [];
    proxies.b.intercept = (req: ProxiedRequest) => {
      if (req.path.startsWith("/v1/inbox")) asked.push(`${req.method} ${req.path.split("?")[0]}`);
      return undefined;
    };
    let events: DmEvent[];
    try {
      events = await hana.sync();
    } finally {
      proxies.b.intercept = () => undefined;
    }
    // The second page is asked for before the first is acknowledged, i.e. before it was processed.
    expect(asked).toEqual(["GET /v1/inbox", "GET /v1/inbox", "POST /v1/inbox/ack", "POST /v1/inbox/ack"]);
    expect(story(events)).toEqual(sent.map((t) => `ivan@b.test: ${t}`));
  });
});
