import { copyFileSync, cpSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { DeviceStore } from "./store/deviceStore.js";
import { LOCK_FILE } from "./store/lock.js";
import { FAST_RETRY, newClient, useTwoInstances } from "./testSupport/instances.js";
import { notes } from "./testSupport/history.js";
import { settle } from "./testSupport/settle.js";

// Issue 6, against real directories and hubs: a device that dies between the hub accepting its commit
// and saving the new state converges when restarted; a device offline for 200 messages and 5 epochs
// catches up with everything, in order.

const env = useTwoInstances();

const texts = async (c: MlsDmClient, groupId: string) => (await notes(c, groupId)).map((n) => n.text);

describe("recovery", () => {
  it(
    "a device killed after the hub accepted its commit, before saving the new state, converges on restart",
    { timeout: 60_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice", resolver);
      const bob = await newClient(b, "bob", resolver);
      const { groupId } = await alice.createGroup(["@bob@b.test"]);
      await settle([alice, bob]);
      const epoch = alice.epoch(groupId);

      // A second process on alice's directory "loses power" at the first group-state write after its pending
      // commit was saved — the hub has accepted the commit by then (it is promoted after the 201). The disk
      // as it is at that instant is copied aside (the lock file aside: its process is gone) and a new
      // process starts from the copy; what the doomed process does after the throw never reaches it.
      const crashDir = `${alice.dir}-after-crash`;
      let armed = false;
      const store = await DeviceStore.open(alice.dir, {
        hooks: {
          beforeRename: (temp) => {
            if (temp.includes("pending.json")) armed = true;
            else if (armed && /(group|base-[^/]+)\.json/.test(temp) && !existsSync(crashDir)) {
              cpSync(alice.dir, crashDir, { recursive: true, filter: (src) => !src.endsWith(LOCK_FILE) });
              throw new Error("power cut");
            }
          },
        },
      });
      const doomed = await MlsDmClient.openStore(store, { services: resolver, retry: FAST_RETRY });
      await expect(doomed.selfUpdate(groupId)).rejects.toThrow("power cut");
      expect(existsSync(crashDir)).toBe(true);

      // Restarted: the pending commit is found accepted and applied, once; bob processed the same commit.
      const restarted = await MlsDmClient.open(crashDir, { services: resolver, retry: FAST_RETRY });
      expect(restarted.epoch(groupId)).toBe(epoch); // what the disk holds: the state before the commit
      await settle([restarted, bob]);
      expect(restarted.epoch(groupId)).toBe(epoch + 1);
      expect(bob.epoch(groupId)).toBe(epoch + 1);
      expect(restarted.epochAuthenticator(groupId)).toBe(bob.epochAuthenticator(groupId));
      await restarted.send(groupId, "back");
      await bob.send(groupId, "welcome back");
      await settle([restarted, bob]);
      expect(await texts(bob, groupId)).toContain("back");
      expect(await texts(restarted, groupId)).toContain("welcome back");
    },
  );

  it.each([
    ["restarts at once", false],
    ["goes on in the same process (its next sync settles it), then restarts", true],
  ])(
    "a commit the hub accepted whose new state cannot be written (a full disk) stays pending on disk; the device %s, and keeps the commit",
    { timeout: 60_000 },
    async (_how, goesOn) => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, `alice3${goesOn ? "b" : "a"}`, resolver);
      const bob = await newClient(b, `bob3${goesOn ? "b" : "a"}`, resolver);
      const { groupId } = await alice.createGroup([`@${bob.acct}`]);
      await settle([alice, bob]);
      const epoch = alice.epoch(groupId);

      // The first write of the group after pending.json fails, as on a full disk; later writes work.
      let armed = false;
      let failed = false;
      const store = await DeviceStore.open(alice.dir, {
        hooks: {
          beforeRename: (temp) => {
            if (temp.includes("pending.json")) armed = true;
            else if (armed && !failed && /group\.json/.test(temp)) {
              failed = true;
              throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
            }
          },
        },
      });
      const device = await MlsDmClient.openStore(store, { services: resolver, retry: FAST_RETRY });
      await expect(device.selfUpdate(groupId)).rejects.toThrow("no space left");
      expect(failed).toBe(true);

      const pendingPath = join(alice.dir, "groups", groupId, "pending.json");
      expect(existsSync(pendingPath)).toBe(true);
      if (goesOn) {
        // Its state in memory is the commit's already: settling must write it before pending.json goes.
        await device.sync();
        expect(device.epoch(groupId)).toBe(epoch + 1);
        expect(existsSync(pendingPath)).toBe(false);
      }
      // A new process finds the commit kept (pending, or promoted on disk) and is with the group.
      const restarted = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
      await restarted.sync();
      expect(restarted.epoch(groupId)).toBe(epoch + 1);
      expect(existsSync(pendingPath)).toBe(false);
      await settle([restarted, bob]);
      expect(bob.epochAuthenticator(groupId)).toBe(restarted.epochAuthenticator(groupId));
      await restarted.send(groupId, "written");
      await settle([restarted, bob]);
      expect(await texts(bob, groupId)).toContain("written");
    },
  );

  it(
    "a pending.json back after a power loss (its deletion is not fsynced), from an epoch the group has left, is known taken and changes nothing",
    { timeout: 60_000 },
    async () => {
      const { a, b, resolver } = env;
      const alice = await newClient(a, "alice2", resolver);
      const bob = await newClient(b, "bob2", resolver);
      const { groupId } = await alice.createGroup(["@bob2@b.test"]);
      await settle([alice, bob]);
      const epoch = alice.epoch(groupId);

      // The pending commit of a self-update, as it was on disk before the hub accepted it.
      const saved = `${alice.dir}-pending-copy`;
      const store = await DeviceStore.open(alice.dir, {
        hooks: {
          beforeRename: (temp) => {
            if (temp.includes("pending.json")) copyFileSync(temp, saved);
          },
        },
      });
      const first = await MlsDmClient.openStore(store, { services: resolver, retry: FAST_RETRY });
      await first.selfUpdate(groupId);
      expect(first.epoch(groupId)).toBe(epoch + 1);
      const pendingPath = join(alice.dir, "groups", groupId, "pending.json");
      expect(existsSync(pendingPath)).toBe(false);
      // The power loss: the deletion never reached the disk.
      writeFileSync(pendingPath, readFileSync(saved));

      // Its first operation is a commit, before any read: the pending commit is known taken (the group
      // remembers its own last commits) and nothing is asked of the hub or made again for it.
      const restarted = await MlsDmClient.open(alice.dir, { services: resolver, retry: FAST_RETRY });
      await restarted.selfUpdate(groupId);
      expect(existsSync(pendingPath)).toBe(false);
      expect(restarted.epoch(groupId)).toBe(epoch + 2);
      const events = await restarted.sync();
      expect(events.filter((e) => e.type === "error" || e.type === "undecryptable")).toEqual([]);
      expect(restarted.epoch(groupId)).toBe(epoch + 2);
      await settle([restarted, bob]);
      expect(bob.epochAuthenticator(groupId)).toBe(restarted.epochAuthenticator(groupId));
      await restarted.send(groupId, "still here");
      await settle([restarted, bob]);
      expect(await texts(bob, groupId)).toContain("still here");
    },
  );

  it(
    "a device offline for 200 messages and 5 epochs catches up with all of them, in order",
    { timeout: 180_000 },
    async () => {
      const { a, b, resolver } = env;
      const carol = await newClient(a, "carol", resolver);
      const dave = await newClient(b, "dave", resolver);
      const erin = await newClient(b, "erin", resolver);
      const { groupId } = await carol.createGroup(["@dave@b.test", "@erin@b.test"]);
      await settle([carol, dave, erin]);
      const epoch = erin.epoch(groupId);
      // erin is offline; carol and dave talk, with a self-update every 40 messages.
      const sent: string[] = [];
      for (let i = 0; i < 200; i++) {
        const who = i % 2 === 0 ? carol : dave;
        if (i % 40 === 39) {
          await who.sync();
          await who.selfUpdate(groupId);
        }
        await who.sync();
        const text = `message ${i}`;
        await who.send(groupId, text);
        sent.push(text);
      }
      await settle([carol, dave]);
      expect(carol.epoch(groupId)).toBe(epoch + 5);

      const events = await erin.sync();
      expect(events.filter((e) => e.type === "undecryptable" || e.type === "error")).toEqual([]);
      expect(await texts(erin, groupId)).toEqual(sent);
      expect(erin.epochAuthenticator(groupId)).toBe(carol.epochAuthenticator(groupId));
      await erin.send(groupId, "caught up");
      await settle([carol, dave, erin]);
      expect((await texts(dave, groupId)).at(-1)).toBe("caught up");
    },
  );
});
