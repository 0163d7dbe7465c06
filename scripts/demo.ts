// `npm run demo`: alice and bob (instance a.localhost) and carol (instance b.localhost) hold an encrypted
// conversation through the real directory and delivery services, started here on free ports. It prints what
// each person reads and, beside it, what the delivery service stored: ciphertext only.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MlsDmClient, StaticResolver, type DmEvent } from "@mastodon-mls/client";
import type { LogEntry } from "@mastodon-mls/delivery";
import { serviceMap, startInstance, type Instance } from "@mastodon-mls/devstack";
import { decodeMlsMessage } from "ts-mls";

const a = await startInstance({ domain: "a.localhost", accounts: ["alice", "bob"] });
const b = await startInstance({ domain: "b.localhost", accounts: ["carol"] });
const services = new StaticResolver(serviceMap([a, b]));
const home = await mkdtemp(join(tmpdir(), "mastodon-mls-demo-"));

function device(instance: Instance, user: string): Promise<MlsDmClient> {
  return MlsDmClient.create({
    dir: join(home, user),
    acct: `${user}@${instance.domain}`,
    mastodonToken: instance.token(user),
    // A throw-away demo directory: plain files (mode 0600), no passphrase to type.
    protection: { kind: "none" },
    services,
    keyPackages: 5,
  });
}

const line = (s = "") => console.log(s);
const said = new Set<string>();

/**
 * What the hub held, collected before each round of reading: it deletes log entries once every member
 * device acknowledged them, so looking only at the end would show almost nothing.
 */
const seen = new Map<number, LogEntry>();
let watched: string | undefined;
async function snapshotHub(): Promise<void> {
  if (watched === undefined) return;
  const group = await a.delivery.context.store.loadGroup(watched);
  if (!group) return;
  for (const entry of await a.delivery.context.store.readLog(watched, 1, group.seq))
    seen.set(entry.seq, entry);
}

/** Everyone fetches until nothing new arrives; prints what each person reads. */
async function everyoneReads(people: Record<string, MlsDmClient>): Promise<void> {
  for (let round = 0; round < 6; round++) {
    let quiet = true;
    for (const [name, client] of Object.entries(people)) {
      await snapshotHub();
      for (const e of await client.sync()) {
        quiet = false;
        describe(name, e);
      }
    }
    if (quiet) return;
  }
}

function describe(name: string, e: DmEvent): void {
  const who = name.padEnd(6);
  switch (e.type) {
    case "message":
      line(`  ${who} reads   ${e.from}: "${e.note.content}"`);
      break;
    case "joined":
      line(`  ${who} joined  the group at ${e.hub}`);
      break;
    case "removed_from_group":
      line(`  ${who} was removed from the group`);
      break;
    case "member_added":
    case "member_removed":
      if (!said.has(`${name}${e.type}${e.accts.join()}`))
        line(`  ${who} sees    ${e.type.replace("_", " ")}: ${e.accts.join(", ")}`);
      said.add(`${name}${e.type}${e.accts.join()}`);
      break;
    case "undecryptable":
      line(`  ${who} cannot decrypt message #${e.seq}: ${e.reason}`);
      break;
    default:
      break;
  }
}

/** What the hub holds for the group: each accepted message's kind, size and first bytes. */
async function hubView(groupId: string): Promise<void> {
  const store = a.delivery.context.store;
  const group = await store.loadGroup(groupId);
  if (!group) return;
  line(
    `\n  The delivery service at ${a.urls.delivery} stored (epoch ${group.epoch}, ${group.roster.size} members):`,
  );
  for (const entry of [...seen.values()].sort((x, y) => x.seq - y.seq)) {
    const decoded = decodeMlsMessage(entry.message, 0)?.[0];
    const kind =
      decoded?.wireformat === "mls_public_message"
        ? `${decoded.publicMessage.content.contentType} (PublicMessage: the hub must read handshakes)`
        : decoded?.wireformat === "mls_private_message"
          ? "application (PrivateMessage: ciphertext)"
          : "?";
    const hex = Buffer.from(entry.message.subarray(entry.message.byteLength - 24)).toString("hex");
    line(
      `    #${String(entry.seq).padEnd(3)} epoch ${entry.epoch}  ${String(entry.message.byteLength).padStart(5)} B  …${hex}  ${kind}`,
    );
  }
}

let exitCode = 0;
try {
  line("Setting up three devices (account key, device certificate, KeyPackages)…");
  const alice = await device(a, "alice");
  const bob = await device(a, "bob");
  const carol = await device(b, "carol");
  const people = { alice, bob, carol };

  line(`\nalice creates a group with @bob@${a.domain} and @carol@${b.domain}`);
  const { groupId } = await alice.createGroup([`bob@${a.domain}`, `carol@${b.domain}`]);
  watched = groupId;
  await everyoneReads(people);
  await alice.verifyMembers(groupId);
  const statuses = alice
    .members(groupId)
    .filter((m) => !m.self)
    .map((m) => `${m.acct} ${m.status}`);
  line(`  alice  checks  each member's profile proof and device list: ${statuses.join(", ")}`);

  line("\nEveryone says hello");
  await alice.send(groupId, "Hi both, this is end-to-end encrypted.");
  await everyoneReads(people);
  await bob.send(groupId, "Hello from bob!");
  await carol.send(groupId, "And carol, from another instance.");
  await everyoneReads(people);

  line(`\nalice removes carol; the group moves to a new epoch carol has no keys for`);
  await alice.removeMembers(groupId, [`carol@${b.domain}`]);
  await everyoneReads(people);
  await bob.send(groupId, "Carol cannot read this one.");
  await everyoneReads(people);

  line("\nbob updates his keys; everyone agrees on the epoch authenticator");
  await bob.selfUpdate(groupId);
  await everyoneReads(people);
  line(`  alice ${alice.epochAuthenticator(groupId)}`);
  line(`  bob   ${bob.epochAuthenticator(groupId)}`);

  await hubView(groupId);
  const stored = [...seen.values()].map((e) => Buffer.from(e.message));
  const leaked = ["end-to-end", "Hello from bob", "Carol cannot"].filter((t) =>
    stored.some((m) => m.includes(t)),
  );
  line(
    leaked.length === 0
      ? "\n  No message text appears in anything the hub stored."
      : `\n  LEAK: ${leaked.join(", ")}`,
  );
  if (leaked.length > 0 || alice.epochAuthenticator(groupId) !== bob.epochAuthenticator(groupId))
    exitCode = 1;
} catch (err) {
  console.error("\nThe demo failed:", err);
  exitCode = 1;
} finally {
  await Promise.all([a.close(), b.close()]);
  await rm(home, { recursive: true, force: true });
}
process.exit(exitCode);
