import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rename, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  signDeviceCertificate,
  cipherSuite,
  profileClientConfig,
} from "@mastodon-mls/bridge";
import { AS_CONTEXT } from "@mastodon-mls/protocol";
import { createGroup } from "ts-mls";
import { describe, expect, it } from "vitest";
import { decodeState, encodeState } from "../mls/codec.js";
import { DeviceStore } from "./deviceStore.js";
import { acquireDeviceLock } from "./lock.js";
import { StoreFormatError } from "./records.js";
import type { GroupRecord, HistoryEntry } from "./schemas.js";

async function freshStore(): Promise<DeviceStore> {
  const dir = join(await mkdtemp(join(tmpdir(), "mls-dm-store-")), "device");
  return DeviceStore.create(dir, { kind: "none" });
}

function groupRecord(groupId: string, state: string | null): GroupRecord {
  return {
    groupId,
    hub: "http://127.0.0.1:1",
    status: "active",
    state,
    lastSeq: 3,
    leaves: {},
    buffered: [{ seq: 4, epoch: 2, sender: "x".repeat(43), message: "AAAA" }],
    unsentInvitations: ["bob@a.test"],
    needsSelfUpdate: true,
    ownLeafUpdatedAt: 1_700_000_000,
    leaving: [],
  };
}

function entry(seq: number): HistoryEntry {
  return {
    v: 1,
    seq,
    at: new Date(0).toISOString(),
    from: "bob@a.test",
    deviceId: "d".repeat(43),
    own: false,
    content: { kind: "unsupported", type: "Poll" },
  };
}

describe("DeviceStore", () => {
  it("keeps the device directory private (0700)", async () => {
    const store = await freshStore();
    expect((await stat(store.dir)).mode & 0o777).toBe(0o700);
    expect((await stat(store.groupsDir)).mode & 0o777).toBe(0o700);
  });

  it("round-trips a group with its MLS state; the reloaded state works as before", async () => {
    const store = await freshStore();
    const account = await generateSigningKeyPair();
    const sig = await generateSigningKeyPair();
    const now = Math.floor(Date.now() / 1000);
    const certificate = await signDeviceCertificate(
      {
        identity: "acct:alice@a.test",
        accountKey: account.publicKey,
        sigKey: sig.publicKey,
        notBefore: now - 60,
        notAfter: now + 3600,
      },
      account.signKey,
    );
    const kp = await generateDeviceKeyPackage({
      identity: "acct:alice@a.test",
      signatureKeyPair: sig,
      certificate,
    });
    const state = await createGroup(
      new Uint8Array(16).fill(7),
      kp.publicPackage,
      kp.privatePackage,
      [],
      await cipherSuite(),
      profileClientConfig(),
    );
    const id = Buffer.alloc(16, 7).toString("base64url");
    await store.writeGroup(groupRecord(id, encodeState(state)));

    const back = await store.readGroup(id);
    expect(back).toEqual(groupRecord(id, encodeState(state)));
    const reloaded = decodeState(back!.state!);
    expect(reloaded.clientConfig).toBeDefined();
    expect(reloaded.keySchedule.epochAuthenticator).toEqual(state.keySchedule.epochAuthenticator);
    expect(await store.listGroupIds()).toEqual([id]);
    const raw = JSON.parse(await readFile(join(store.groupsDir, id, "group.json"), "utf8")) as {
      format: string;
      v: number;
    };
    expect([raw.format, raw.v]).toEqual(["mls-dm.group-delta", 2]);
  });

  it("refuses a file written by a newer format version, and files of another kind", async () => {
    const store = await freshStore();
    const id = "AAAAAAAAAAAAAAAAAAAAAA";
    await mkdir(join(store.groupsDir, id), { recursive: true });
    await writeFile(
      join(store.groupsDir, id, "group.json"),
      JSON.stringify({ format: "mls-dm.group", v: 3 }),
    );
    await expect(store.readGroup(id)).rejects.toThrow(/newer version/);
    await writeFile(
      join(store.groupsDir, id, "group.json"),
      JSON.stringify({ format: "mls-dm.device", v: 2 }),
    );
    await expect(store.readGroup(id)).rejects.toBeInstanceOf(StoreFormatError);
  });

  it("never lets a group id from a hub name a path outside the groups directory", async () => {
    const store = await freshStore();
    await expect(store.readGroup("../../etc")).rejects.toThrow(/not a group id/);
  });

  it("keeps history across a torn last line and never shows a sequence number twice", async () => {
    const store = await freshStore();
    const id = "BBBBBBBBBBBBBBBBBBBBBB";
    await store.appendHistory(id, [entry(2), entry(1)]);
    await store.appendHistory(id, [entry(2)]); // re-processed after a crash
    await writeFile(join(store.groupsDir, id, "history.jsonl"), '\n{"v":1,"seq":9,"at', { flag: "a" });
    expect((await store.readHistory(id)).map((e) => e.seq)).toEqual([1, 2]);
    await store.appendHistory(id, [entry(3)]);
    expect((await store.readHistory(id)).map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("knows who first used each note and activity id, reading only what was appended since, or a new file whole", async () => {
    const store = await freshStore();
    const id = "CCCCCCCCCCCCCCCCCCCCCC";
    const note = (seq: number, from: string, activityId: string, noteId: string): HistoryEntry => ({
      ...entry(seq),
      from,
      content: {
        kind: "activity",
        activity: {
          "@context": AS_CONTEXT,
          v: 1,
          id: activityId,
          type: "Create",
          actor: `acct:${from}`,
          published: new Date(0).toISOString(),
          object: {
            type: "Note",
            id: noteId,
            attributedTo: `acct:${from}`,
            published: new Date(0).toISOString(),
            content: "x",
          },
        },
      },
    });
    const urn = () => `urn:uuid:${randomUUID()}`;
    const [a1, n1, a2, n2, a3, a4, n4] = [urn(), urn(), urn(), urn(), urn(), urn(), urn()];
    expect((await store.historyIdAuthors(id)).notes.size).toBe(0);
    await store.appendHistory(id, [note(1, "bob@a.test", a1, n1)]);
    expect((await store.historyIdAuthors(id)).notes.get(n1)).toBe("bob@a.test");
    // Appended since, and a torn line: read on from where it stopped; a later copy keeps the first author.
    await store.appendHistory(id, [note(2, "carol@a.test", a2, n1)]);
    await writeFile(join(store.groupsDir, id, "history.jsonl"), '\n{"v":1,"seq":9,"at', { flag: "a" });
    await store.appendHistory(id, [note(3, "carol@a.test", a3, n2)]);
    const known = await store.historyIdAuthors(id);
    expect([known.notes.get(n1), known.notes.get(n2), known.activities.get(a2)]).toEqual([
      "bob@a.test",
      "carol@a.test",
      "carol@a.test",
    ]);
    // Another file in its place (as a change of passphrase writes): read again whole.
    const path = join(store.groupsDir, id, "history.jsonl");
    const text = await readFile(path);
    await writeFile(`${path}.new`, text);
    await rename(`${path}.new`, path);
    await store.appendHistory(id, [note(4, "dave@a.test", a4, n4)]);
    expect((await store.historyIdAuthors(id)).notes.get(n4)).toBe("dave@a.test");
    expect((await store.historyIdAuthors(id)).notes.get(n1)).toBe("bob@a.test");
  });

  it("finds a sequence number among the history's last lines only, whatever the cut and a damaged line", async () => {
    const store = await freshStore();
    const id = "CCCCCCCCCCCCCCCCCCCCCC";
    expect(await store.historyTailHas(id, 1)).toBe(false); // no history yet
    for (let seq = 1; seq <= 200; seq++) await store.appendHistory(id, [entry(seq)], { durable: false });
    await store.flushHistory(id);
    // The first made the file; the others went on this thread, each a whole line, in order.
    expect((await store.readHistory(id)).map((e) => e.seq)).toEqual(
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    const path = join(store.groupsDir, id, "history.jsonl");
    const size = (await stat(path)).size;
    const lineBytes = Math.ceil(size / 200); // lines differ by a digit or two
    expect(await store.historyTailHas(id, 200, 4 * lineBytes)).toBe(true);
    expect(await store.historyTailHas(id, 197, 4 * lineBytes)).toBe(true);
    expect(await store.historyTailHas(id, 150, 4 * lineBytes)).toBe(false); // further back than asked
    expect(await store.historyTailHas(id, 1)).toBe(true); // the default reach covers this small file
    expect(await store.historyTailHas(id, 201)).toBe(false);
    // Every cut point: the partial first line is skipped, never misread or thrown over.
    const last = size - (await readFile(path, "utf8")).lastIndexOf("\n");
    for (let tail = 1; tail <= 3 * lineBytes; tail += 7) {
      expect(await store.historyTailHas(id, 200, tail)).toBe(tail >= last);
    }
    await writeFile(path, '\n{"v":1,"seq":201,"at', { flag: "a" }); // a torn last line
    await writeFile(path, '\n{"v":2}', { flag: "a" }); // a line of another format
    expect(await store.historyTailHas(id, 199)).toBe(true);
    expect(await store.historyTailHas(id, 201)).toBe(false);
  });

  it("refuses to open a directory other users can read", async () => {
    const store = await freshStore();
    await writeFile(join(store.dir, "device.json"), "{}");
    const { chmod } = await import("node:fs/promises");
    await chmod(store.dir, 0o755);
    await expect(DeviceStore.open(store.dir)).rejects.toThrow(/chmod 700/);
  });

  it("sweeps leftover temporary files on open, but not while another process holds the lock (its writes)", async () => {
    const store = await freshStore();
    const groupDir = join(store.groupsDir, "g1");
    await mkdir(groupDir, { recursive: true });
    const temp = join(groupDir, "group.json.tmp-0123456789ab");
    await writeFile(temp, "a write in progress");
    const lock = await acquireDeviceLock(store.dir, { timeoutMs: 1000 });
    await DeviceStore.open(store.dir);
    expect(await readFile(temp, "utf8")).toBe("a write in progress");
    await lock.release();
    await DeviceStore.open(store.dir);
    await expect(stat(temp)).rejects.toMatchObject({ code: "ENOENT" });
    // and the lock it took for the sweep is gone again
    await (await acquireDeviceLock(store.dir, { timeoutMs: 0 })).release();
  });
});
