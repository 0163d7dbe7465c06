import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeviceStore } from "../store/deviceStore.js";
import { newClient, useProxiedHub } from "../testSupport/instances.js";
import { settle } from "../testSupport/settle.js";
import { DeliveryClient } from "../transport/deliveryClient.js";
import { capturedIo } from "../testSupport/cliIo.js";
import { main } from "./main.js";

// Text a hub or a member controls, on the terminal of `mls-dm` (found by an audit): an invitation's
// `from` (any hub the device polls says what it likes there), a hub's error message (printed by every
// command), and a member's message with a newline that forged a line of its own.

const env = useProxiedHub();
const ESC_PAYLOAD = "\u001b]0;owned\u0007\u001b[2J\u001b[H";

const fakeIo = () => capturedIo();

/** Raw control characters anywhere in what was printed (JSON shows them as \u001b, \u0007…). */
const RAW_CONTROL = /\\u00(?:0[0-8b-f]|1[0-9a-f]|7f)/;

let evil: Server;
let evilUrl = "";
beforeAll(async () => {
  // A stranger's hub: its inbox holds one invitation whose `from` carries escape sequences.
  evil = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    if (req.method === "GET" && req.url?.startsWith("/v1/inbox")) {
      res.end(
        JSON.stringify({
          items: [
            {
              kind: "invitation",
              from: `carol@a.test${ESC_PAYLOAD}`,
              from_device: "A".repeat(43),
              hub: evilUrl,
              group_id: "AAAAAAAAAAAAAAAAAAAAAA",
              cursor: "1",
            },
          ],
          cursor: "1",
          more: false,
        }),
      );
      return;
    }
    if (req.method === "POST" && req.url === "/v1/inbox/ack") {
      res.end(JSON.stringify({ acked: true }));
      return;
    }
    res.statusCode = 404;
    res.end(JSON.stringify({ error: "not_found", message: "Not found." }));
  });
  await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
  evilUrl = `http://127.0.0.1:${(evil.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => evil.close(() => resolve())));

describe("text from a hostile hub or member on the terminal", () => {
  it(
    "an invitation's `from` from a stranger's hub: no raw control characters, and the hub named",
    { timeout: 60_000 },
    async () => {
      const { a, b, resolver } = env;
      const bob = await newClient(b, "bob1", resolver);
      const mallory = await newClient(a, "mallory1", resolver);
      // One invitation to bob's home hub names mallory's hub: bob's next sync polls it.
      const device = await (await DeviceStore.open(mallory.dir)).readDevice();
      await new DeliveryClient(b.urls.delivery, {
        certificate: fromBase64url(device.certificate),
        signKey: fromBase64url(device.deviceKey.signKey),
      }).invite(bob.acct, evilUrl, toBase64url(new Uint8Array(randomBytes(16))));
      // A development map: loopback hubs are allowed (in production this one would be refused outright,
      // invitationHub.test.ts); what is printed is what is checked here.
      const map = JSON.stringify({
        "a.test": { ...a.urls, mastodon: a.mastodon.url },
        "b.test": { ...b.urls, mastodon: b.mastodon.url },
      });
      const io = fakeIo();
      expect(await main(["--dir", bob.dir, "--services-map", map, "sync"], io)).toBe(0);
      const line = io.stdout.find((l) => l.includes("carol@a.test") && l.includes("invited you"));
      expect(line, io.stdout.join("\n")).toBeDefined();
      expect(JSON.stringify(line)).not.toMatch(RAW_CONTROL);
      expect(line).toContain(`(at ${evilUrl})`);
    },
  );

  it(
    "a hub's error message: no raw control characters, and no line of its own",
    { timeout: 60_000 },
    async () => {
      const { a, b, resolver, proxy } = env;
      const alice = await newClient(a, "alice2", resolver);
      const bob = await newClient(b, "bob2", resolver);
      const { groupId } = await alice.createGroup([`@${bob.acct}`]);
      await settle([alice, bob]);
      const forged = `12:00:00 [${groupId.slice(0, 8)}] alice2@a.test: sent fine, ignore the error`;
      proxy.intercept = (req) =>
        req.method === "POST" && req.path === `/v1/groups/${groupId}/messages`
          ? { status: 403, body: { error: "not_a_member", message: `${ESC_PAYLOAD}\n${forged}` } }
          : undefined;
      const map = JSON.stringify({
        "a.test": { ...a.urls, delivery: proxy.url, mastodon: a.mastodon.url },
        "b.test": { ...b.urls, mastodon: b.mastodon.url },
      });
      const io = fakeIo();
      try {
        expect(await main(["--dir", bob.dir, "--services-map", map, "send", groupId, "hi"], io)).toBe(3);
      } finally {
        proxy.intercept = () => undefined;
      }
      const printed = io.stderr.join("\n");
      expect(printed).toContain("refused (not_a_member)");
      expect(JSON.stringify(printed)).not.toMatch(RAW_CONTROL);
      expect(printed.split("\n").filter((l) => l.startsWith("12:00:00"))).toEqual([]);
    },
  );

  it(
    "a member's message with a newline cannot print a line that reads as someone else's",
    { timeout: 60_000 },
    async () => {
      const { a, b, resolver, proxy } = env;
      const alice = await newClient(a, "alice3", resolver);
      const bob = await newClient(b, "bob3", resolver);
      const mallory = await newClient(a, "mallory3", resolver);
      const { groupId } = await alice.createGroup([`@${bob.acct}`, `@${mallory.acct}`]);
      await settle([alice, bob, mallory]);
      await mallory.send(
        groupId,
        `ok\n${new Date().toISOString().slice(11, 19)} [${groupId.slice(0, 8)}] alice3@a.test: ` +
          "bob, please send the file to mallory3@a.test, I can't open it",
      );
      const map = JSON.stringify({
        "a.test": { ...a.urls, delivery: proxy.url, mastodon: a.mastodon.url },
        "b.test": { ...b.urls, mastodon: b.mastodon.url },
      });
      const io = fakeIo();
      expect(await main(["--dir", bob.dir, "--services-map", map, "sync"], io)).toBe(0);
      const lines = io.stdout.join("\n").split("\n");
      expect(lines.some((l) => l.includes("mallory3@a.test: ok"))).toBe(true);
      expect(lines.filter((l) => /^\d\d:\d\d:\d\d \[\S+\] alice3@a\.test: /.test(l))).toEqual([]);
      // The history shows it the same way.
      const shown = fakeIo();
      expect(await main(["--dir", bob.dir, "--services-map", map, "history", groupId], shown)).toBe(0);
      expect(
        shown.stdout
          .join("\n")
          .split("\n")
          .filter((l) => /alice3@a\.test: bob/.test(l) && !l.startsWith(" ")),
      ).toEqual([]);
    },
  );
});
