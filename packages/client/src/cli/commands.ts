import { constants } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { safetyNumberQr } from "@mastodon-mls/bridge";
import { inspectBackup, openAccountKeyBackup } from "../backup.js";
import { MlsDmClient, type ClientOptions } from "../client.js";
import { ClientError } from "../errors.js";
import type { DmEvent } from "../events.js";
import {
  accountOfToken,
  authorizeUrl,
  exchangeCode,
  instanceOrigin,
  newPkce,
  registerApp,
} from "../mastodon/oauth.js";
import { setupComplete, type DeviceSetupOptions } from "../setup.js";
import type { DeviceStore } from "../store/deviceStore.js";
import { DeviceStore as Store } from "../store/deviceStore.js";
import { checkStorePassphrase } from "../store/rekey.js";
import type { SessionRecord } from "../store/schemas.js";
import type { ServiceUrls } from "../transport/resolver.js";
import { Cli, canonicalAcctArgs, resolveGroup } from "./context.js";
import { formatEvent, formatHistory, formatMembers } from "./format.js";
import { UsageError, safeText, withProgress } from "./io.js";
import { HubsUnreadError, explain } from "./errors.js";
import { conditionLine } from "./recreate.js";
import { checkServices } from "./services.js";

// The commands. Each is a thin layer over the library: parse, call, print. Errors propagate to main.ts,
// which turns them into a message, advice and an exit code (errors.ts).

export interface ServiceOverrides {
  directory?: string;
  delivery?: string;
}

export interface NewDeviceOptions extends ServiceOverrides {
  token?: string;
  /** This device's name in the account's device list. */
  name?: string;
  instance?: string;
  passphrase: boolean;
  keyPackages?: string;
}

function json(cli: Cli, value: unknown): void {
  cli.io.out(JSON.stringify(value));
}

function printEvents(cli: Cli, events: DmEvent[], asJson: boolean, toStderr = false): void {
  for (const e of events) {
    if (asJson) {
      if (toStderr) continue;
      json(cli, e);
      continue;
    }
    const line = formatEvent(e);
    if (line === undefined) continue;
    if (toStderr) cli.io.err(line);
    else cli.io.out(line);
  }
}

/** The home services of an account: explicit URLs, the services map, or the domain's well-known file. */
async function homeServices(cli: Cli, domain: string, o: ServiceOverrides): Promise<ServiceUrls> {
  if ((o.directory === undefined) !== (o.delivery === undefined)) {
    throw new UsageError("give both --directory and --delivery, or neither");
  }
  const services =
    o.directory !== undefined && o.delivery !== undefined
      ? { directory: o.directory, delivery: o.delivery }
      : await cli.resolver(undefined).resolve(domain);
  return withProgress(cli.io, `Checking the services of ${domain}`, () => checkServices(services));
}

/** A session from a token given on the command line (scripts, tests): the instance says whose it is. */
async function sessionFromToken(
  cli: Cli,
  token: string,
  instance: string,
  o: ServiceOverrides,
): Promise<SessionRecord> {
  const origin = instanceOrigin(instance);
  const { acct, domain } = await withProgress(cli.io, `Asking ${origin} whose token this is`, () =>
    accountOfToken(origin, token),
  );
  const services = await homeServices(cli, domain, o);
  const map = cli.servicesMapOption();
  return { instanceUrl: origin, acct, mastodonToken: token, services, ...(map ? { servicesMap: map } : {}) };
}

// ---- login ----

export async function login(
  cli: Cli,
  instance: string,
  opts: ServiceOverrides & { code?: string; passphrase: boolean },
): Promise<void> {
  const origin = instanceOrigin(instance);
  const state = await Store.inspect(cli.dir);
  if (state.kind === "legacy") {
    throw new ClientError("needs_migration", `${cli.dir} is of an earlier format: run mls-dm migrate first`);
  }
  if (state.kind === "foreign") {
    throw new ClientError(
      "device_exists",
      `${cli.dir} is not empty and not a device directory; choose another with --dir`,
    );
  }
  // The passphrase is settled first (an existing directory's checked, a new one's chosen): asked after
  // the code, a mistyped one would cost the user the whole browser round again.
  const existing = state.kind === "store" ? await cli.openStore() : undefined;
  const protection = existing === undefined ? await cli.newProtection(opts.passphrase) : undefined;
  // Everything that can fail on the network happens before anything is written.
  const app = await withProgress(cli.io, `Registering mls-dm with ${origin}`, () => registerApp(origin));
  const pkce = newPkce();
  cli.io.err("Open this address in a browser, approve mls-dm, and paste the code it shows:");
  cli.io.out(authorizeUrl(origin, app, pkce.challenge));
  const code = opts.code ?? (await cli.io.readLine("Code: ")).trim();
  if (code === "") throw new UsageError("no code given");
  const token = await withProgress(cli.io, "Exchanging the code for a token", () =>
    exchangeCode(origin, app, code, pkce.verifier),
  );
  const { acct, domain } = await accountOfToken(origin, token);
  const services = await homeServices(cli, domain, opts);
  const map = cli.servicesMapOption();
  const session: SessionRecord = {
    instanceUrl: origin,
    acct,
    mastodonToken: token,
    services,
    ...(map ? { servicesMap: map } : {}),
  };

  let store: DeviceStore;
  if (existing !== undefined) {
    store = existing;
    if (await store.hasDevice()) {
      const device = await store.readDevice();
      if (device.acct !== acct) {
        throw new UsageError(
          `${cli.dir} holds the device of ${device.acct}, not ${acct}; use --dir for another account`,
        );
      }
      const client = await MlsDmClient.openStore(store, { services: cli.resolver(session) });
      await client.setMastodonToken(token);
    }
  } else {
    store = await cli.createStore(protection!);
  }
  await store.writeSession(session);
  cli.io.out(`Logged in as ${acct} (${origin}).`);
  if (!(await store.hasDevice()))
    cli.io.err(`Next: ${cli.cmd("init")} (or ${cli.cmd("restore <backup>")} on a new device)`);
}

// ---- init / restore ----

/** What `init` and `restore` both give the new device: the login's account, token and services, and the options. */
function newDeviceSetup(
  cli: Cli,
  session: SessionRecord,
  opts: NewDeviceOptions,
  keyPackages: number | undefined,
): DeviceSetupOptions & ClientOptions {
  return {
    acct: session.acct,
    mastodonToken: session.mastodonToken,
    services: cli.resolver(session),
    mastodonUrl: session.instanceUrl,
    ...(opts.name === undefined ? {} : { deviceName: opts.name }),
    ...(keyPackages === undefined ? {} : { keyPackages }),
  };
}

/** The store and session a new device goes into; creates the directory when needed. */
export async function prepareNewDevice(
  cli: Cli,
  opts: NewDeviceOptions,
): Promise<{ store: DeviceStore; session: SessionRecord } | { existing: MlsDmClient }> {
  const state = await Store.inspect(cli.dir);
  if (state.kind === "legacy") {
    throw new ClientError("needs_migration", `${cli.dir} is of an earlier format: run mls-dm migrate`);
  }
  if (state.kind === "foreign") {
    throw new ClientError(
      "device_exists",
      `${cli.dir} is not empty and not a device directory; choose another with --dir`,
    );
  }
  if (state.kind === "store" && state.hasDevice) {
    const store = await cli.openStore();
    if (setupComplete(await store.readDevice())) {
      throw new ClientError("device_exists", `${cli.dir} already holds a set-up device (see mls-dm whoami)`);
    }
    // A set-up cut short (a service was unreachable): opening finishes it.
    const session = await store.readSession();
    const existing = await withProgress(cli.io, "Finishing the device set-up", () =>
      MlsDmClient.openStore(store, { services: cli.resolver(session) }),
    );
    return { existing };
  }
  let session: SessionRecord | undefined;
  if (opts.token !== undefined) {
    if (opts.instance === undefined) throw new UsageError("--token needs --instance <the Mastodon instance>");
    session = await sessionFromToken(cli, opts.token, opts.instance, opts);
  }
  const store = state.kind === "store" ? await cli.openStore() : undefined;
  session ??= await store?.readSession();
  if (session === undefined) {
    throw new UsageError(`log in first: ${cli.cmd("login <instance>")} (or give --token and --instance)`);
  }
  const ready = store ?? (await cli.createStore(await cli.newProtection(opts.passphrase)));
  await ready.writeSession(session);
  return { store: ready, session };
}

export function keyPackageCount(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new UsageError("--key-packages must be 1…100");
  return n;
}

export async function init(cli: Cli, opts: NewDeviceOptions & { newAccountKey?: boolean }): Promise<void> {
  const keyPackages = keyPackageCount(opts.keyPackages);
  const prepared = await prepareNewDevice(cli, opts);
  if ("existing" in prepared) {
    cli.io.out(`Device ${prepared.existing.deviceId} of ${prepared.existing.acct} is ready.`);
    return;
  }
  const { store, session } = prepared;
  const client = await withProgress(
    cli.io,
    "Creating the account key and the device, publishing the device list and profile proof, uploading KeyPackages",
    () =>
      MlsDmClient.createInStore(store, {
        ...newDeviceSetup(cli, session, opts, keyPackages),
        ...(opts.newAccountKey === true ? { replaceAccountKey: true } : {}),
      }),
  );
  cli.io.out(`Device ${client.deviceId} of ${client.acct} is ready.`);
  cli.io.err(`A new account key was made. Back it up now: ${cli.cmd("backup")}`);
}

export async function restore(cli: Cli, file: string, opts: NewDeviceOptions): Promise<void> {
  const keyPackages = keyPackageCount(opts.keyPackages);
  // Said before the recovery key is typed and the backup opened (Argon2id), not after: without a login
  // (or --token) there is no account to restore into.
  if (opts.token === undefined) {
    const state = await Store.inspect(cli.dir);
    if (state.kind === "absent" || state.kind === "empty" || (state.kind === "store" && !state.hasSession)) {
      throw new UsageError(`log in first: ${cli.cmd("login <instance>")} (or give --token and --instance)`);
    }
  }
  const text = await readFile(resolve(file), "utf8").catch((e: unknown) => {
    throw new UsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  });
  const info = inspectBackup(text);
  const secret =
    info.protectedBy === "recovery-key"
      ? (cli.io.env.MLS_DM_RECOVERY_KEY ??
        (cli.io.stdinIsTty
          ? await cli.io.readSecret("Recovery key: ")
          : (() => {
              throw new UsageError("set MLS_DM_RECOVERY_KEY or run in a terminal");
            })()))
      : await cli.backupPassphrase(false);
  const policy = cli.kdfPolicy;
  // The backup is opened before anything is created: a wrong secret changes nothing.
  const restored = await withProgress(cli.io, "Opening the backup (Argon2id)", (report) =>
    openAccountKeyBackup(text, secret, { ...policy, onProgress: report }),
  );
  const prepared = await prepareNewDevice(cli, opts);
  if ("existing" in prepared) throw new ClientError("device_exists", `${cli.dir} already holds a device`);
  const { store, session } = prepared;
  if (session.acct !== restored.acct) {
    throw new UsageError(`the backup is of ${restored.acct}, but you are logged in as ${session.acct}`);
  }
  const client = await withProgress(cli.io, "Creating the device, uploading KeyPackages", () =>
    MlsDmClient.createInStore(store, newDeviceSetup(cli, session, opts, keyPackages), restored.accountKey),
  );
  cli.io.out(`Restored the account key of ${client.acct}; new device ${client.deviceId} is ready.`);
  cli.io.err(
    "Groups are not in the backup: your other devices add this one to your groups when they next sync; " +
      "if none is left, ask a member of each group to add you again (mls-dm add).",
  );
}

export async function migrate(cli: Cli, opts: { passphrase: boolean }): Promise<void> {
  const state = await Store.inspect(cli.dir);
  if (state.kind !== "legacy") {
    throw new ClientError(
      state.kind === "store" ? "device_exists" : "no_device",
      state.kind === "store"
        ? `${cli.dir} is already in the current format`
        : `${cli.dir} holds no device to migrate`,
    );
  }
  const protection = await cli.newProtection(opts.passphrase);
  const policy = cli.kdfPolicy;
  await withProgress(cli.io, "Encrypting the device directory", (report) =>
    MlsDmClient.migrate(cli.dir, protection, { ...policy, onProgress: report }),
  );
  cli.io.out(
    `${cli.dir} is now in the current format${protection.kind === "passphrase" ? ", encrypted" : ""}.`,
  );
}

// ---- change-passphrase ----

export async function changePassphrase(cli: Cli, opts: { passphrase: boolean }): Promise<void> {
  const state = await Store.inspect(cli.dir);
  const policy = cli.kdfPolicy;
  if (state.kind !== "store") {
    await Store.open(cli.dir, policy); // throws what opening it would: no device, needs migration
    throw new ClientError("no_device", `${cli.dir} is not a device directory`);
  }
  if (state.protection === "none" && !opts.passphrase) {
    throw new UsageError(`${cli.dir} is not encrypted: there is no passphrase to remove`);
  }
  let current: { passphrase?: string } = {};
  if (state.protection === "passphrase") {
    const passphrase = await cli.unlockPassphrase("Current passphrase");
    // Checked before the new one is asked for (one more Argon2id run): a mistyped current passphrase
    // should not cost typing the new one twice first.
    await withProgress(cli.io, `Checking the passphrase of ${cli.dir} (Argon2id)`, (report) =>
      checkStorePassphrase(cli.dir, { ...policy, passphrase, onProgress: report }),
    );
    current = { passphrase };
  }
  const protection = await cli.newProtection(opts.passphrase, true);
  const label =
    state.protection === protection.kind
      ? "Protecting the data key with the new passphrase (Argon2id)"
      : protection.kind === "none"
        ? "Decrypting every file of the device directory"
        : "Encrypting every file of the device directory (Argon2id)";
  const change = await withProgress(cli.io, label, (report) =>
    MlsDmClient.changePassphrase(cli.dir, current, protection, { ...policy, onProgress: report }),
  );
  if (change.from === "passphrase" && change.to === "passphrase") {
    cli.io.out(`The passphrase of ${cli.dir} is changed.`);
    return;
  }
  cli.io.out(
    change.to === "passphrase"
      ? `${cli.dir} is now encrypted under the new passphrase (${change.resealed} files).`
      : `${cli.dir} is no longer encrypted (${change.resealed} files).`,
  );
  cli.io.err(
    "An mls-dm process that had the directory open (e.g. listen) stops at its next step: start it again.",
  );
}

// ---- queries ----

export async function whoami(cli: Cli, opts: { json?: boolean }): Promise<void> {
  const { client, session, store } = await cli.openClient();
  const info = {
    acct: client.acct,
    deviceId: client.deviceId,
    dir: client.dir,
    protection: store.protection,
    instance: session?.instanceUrl ?? null,
    holdsAccountKey: client.holdsAccountKey,
    groups: client.groups().filter((g) => g.status === "active").length,
  };
  if (opts.json === true) return json(cli, info);
  cli.io.out(`${info.acct}`);
  cli.io.out(`  device     ${info.deviceId}`);
  cli.io.out(
    `  directory  ${info.dir} (${info.protection === "passphrase" ? "encrypted" : "NOT encrypted"})`,
  );
  if (info.instance !== null) cli.io.out(`  instance   ${info.instance}`);
  cli.io.out(
    `  account key ${info.holdsAccountKey ? `held by this device (back it up: ${cli.cmd("backup")})` : "not on this device"}`,
  );
  cli.io.out(`  groups     ${info.groups}`);
}

async function syncFirst(cli: Cli, client: MlsDmClient, doSync: boolean): Promise<void> {
  if (!doSync) return;
  const events = await withProgress(cli.io, "Fetching new messages", () => client.sync());
  printEvents(cli, events, false, true);
}

/**
 * The group a command names. One this device has not heard of yet (an invitation not fetched) is looked
 * for again after fetching new messages, printed to stderr.
 */
async function findGroup(cli: Cli, client: MlsDmClient, text: string): Promise<string> {
  try {
    return resolveGroup(client, text);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    await syncFirst(cli, client, true);
    return resolveGroup(client, text);
  }
}

export async function groups(cli: Cli, opts: { json?: boolean; sync: boolean }): Promise<void> {
  const { client } = await cli.openClient();
  await syncFirst(cli, client, opts.sync);
  const list = client.groups().map((g) => ({
    ...g,
    members: g.status === "active" ? [...new Set(client.members(g.groupId).map((m) => m.acct))] : [],
  }));
  if (opts.json === true) return json(cli, list);
  if (list.length === 0) cli.io.out(`No groups yet (${cli.cmd("create <@user@domain>…")})`);
  for (const g of list) {
    const replaced =
      (g.replacedBy === undefined ? "" : `  (re-created as ${g.replacedBy})`) +
      (g.replaces === undefined ? "" : `  (re-creates ${g.replaces})`);
    cli.io.out(
      g.status === "active"
        ? `${g.groupId}  epoch ${g.epoch}  ${g.members.join(", ")}${replaced}`
        : `${g.groupId}  (left)${replaced}`,
    );
    const trouble = conditionLine(g);
    if (trouble !== undefined) cli.io.out(`  ${trouble}`);
  }
}

export async function members(
  cli: Cli,
  group: string,
  opts: { json?: boolean; sync: boolean },
): Promise<void> {
  const { client } = await cli.openClient();
  await syncFirst(cli, client, opts.sync);
  const id = await findGroup(cli, client, group);
  const list = client.members(id);
  if (opts.json === true) return json(cli, list);
  for (const line of formatMembers(list)) cli.io.out(line);
  const trouble = conditionLine(client.groups().find((g) => g.groupId === id)!);
  if (trouble !== undefined) cli.io.out(trouble);
}

export async function history(
  cli: Cli,
  group: string,
  opts: { json?: boolean; sync: boolean; limit?: string },
): Promise<void> {
  const { client } = await cli.openClient();
  await syncFirst(cli, client, opts.sync);
  let items = await client.history(await findGroup(cli, client, group));
  if (opts.limit !== undefined) {
    const n = Number(opts.limit);
    if (!Number.isInteger(n) || n < 1) throw new UsageError("--limit must be a positive integer");
    items = items.slice(-n);
  }
  for (const h of items) {
    if (opts.json === true) json(cli, h);
    else cli.io.out(formatHistory(h, client.acct));
  }
}

// ---- changes ----

export interface AddCliOptions {
  json?: boolean;
  allowUnverified?: boolean;
}

export async function create(cli: Cli, accts: string[], opts: AddCliOptions): Promise<void> {
  const people = canonicalAcctArgs(accts);
  const { client } = await cli.openClient();
  const result = await withProgress(cli.io, "Creating the group, verifying and adding members", () =>
    client.createGroup(people, { allowUnverified: opts.allowUnverified === true }),
  );
  if (opts.json === true) return json(cli, result);
  cli.io.out(`Created group ${result.groupId}`);
  for (const a of result.added) cli.io.out(`  added ${a.acct} (device ${a.deviceId.slice(0, 12)})`);
  for (const r of result.refused) cli.io.err(`  NOT added ${r.acct}: ${safeText(r.reason)}`);
}

export async function add(cli: Cli, group: string, accts: string[], opts: AddCliOptions): Promise<void> {
  const people = canonicalAcctArgs(accts);
  const { client } = await cli.openClient();
  const id = await findGroup(cli, client, group);
  const report = await withProgress(cli.io, "Verifying and adding members", () =>
    client.addMembers(id, people, { allowUnverified: opts.allowUnverified === true }),
  );
  if (opts.json === true) return json(cli, report);
  for (const a of report.added) cli.io.out(`added ${a.acct} (device ${a.deviceId.slice(0, 12)})`);
  for (const r of report.refused) cli.io.err(`NOT added ${r.acct}: ${safeText(r.reason)}`);
  if (report.added.length === 0 && report.refused.length === 0) cli.io.out("nothing to add: already members");
}

export async function remove(
  cli: Cli,
  group: string,
  accts: string[],
  devices: string[] = [],
): Promise<void> {
  if (accts.length === 0 && devices.length === 0) {
    throw new UsageError("name the people to remove (@user@domain …) or the devices (--device <id> …)");
  }
  const people = canonicalAcctArgs(accts);
  const { client } = await cli.openClient();
  const id = await findGroup(cli, client, group);
  if (devices.length > 0) {
    const { removed } = await withProgress(cli.io, "Removing devices", () =>
      client.removeDevices(id, devices),
    );
    for (const d of removed) cli.io.out(`removed device ${d.deviceId.slice(0, 12)} of ${d.acct}`);
  }
  if (people.length > 0) {
    const { removed } = await withProgress(cli.io, "Removing members", () =>
      client.removeMembers(id, people),
    );
    cli.io.out(removed.length === 0 ? "nobody to remove: not members" : `removed ${removed.join(", ")}`);
  }
}

export async function readd(cli: Cli, group: string, devices: string[], opts: AddCliOptions): Promise<void> {
  const { client } = await cli.openClient();
  const id = await findGroup(cli, client, group);
  const report = await withProgress(cli.io, "Verifying and re-adding devices", () =>
    client.readdDevices(id, devices, { allowUnverified: opts.allowUnverified === true }),
  );
  if (opts.json === true) return json(cli, report);
  const added = new Set(report.added.map((a) => a.deviceId));
  for (const a of report.added) cli.io.out(`re-added device ${a.deviceId.slice(0, 12)} of ${a.acct}`);
  for (const d of report.removed.filter((r) => !added.has(r.deviceId))) {
    cli.io.out(`removed device ${d.deviceId.slice(0, 12)} of ${d.acct} (not added again: see below)`);
  }
  for (const r of report.refused) {
    cli.io.err(
      `NOT re-added ${r.acct}${r.deviceId ? ` (device ${r.deviceId.slice(0, 12)})` : ""}: ${safeText(r.reason)}`,
    );
  }
  for (const s of report.skipped) {
    cli.io.err(
      `NOT re-added device ${s.deviceId.slice(0, 12)} of ${s.acct}: a commit that came first changed its ` +
        "leaf (it updated its keys, or another member re-added it); run readd again if it still needs a " +
        "fresh start",
    );
  }
}

/**
 * Leaves the groups named, and with `--with` every group one of these people is in (someone who keeps
 * adding this device to groups of theirs). One that cannot be left is reported and the others are still
 * left; the first failure then decides the exit code.
 */
export async function leave(cli: Cli, groups: string[], withAccts: string[]): Promise<void> {
  if (groups.length === 0 && withAccts.length === 0) {
    throw new UsageError(
      "name the groups to leave, or the people whose groups to leave (--with @user@domain …)",
    );
  }
  const { client } = await cli.openClient();
  await leaveGroups(cli, client, groups, withAccts);
}

async function leaveGroups(
  cli: Cli,
  client: MlsDmClient,
  groups: string[],
  withAccts: string[],
): Promise<void> {
  const ids = new Set<string>();
  for (const group of groups) ids.add(await findGroup(cli, client, group));
  if (withAccts.length > 0) {
    const people = new Set(canonicalAcctArgs(withAccts));
    const own = client.acct;
    if (people.has(own)) {
      throw new UsageError(`${own} is your own account: name the groups to leave instead`);
    }
    await syncFirst(cli, client, true);
    const theirs = client
      .groups()
      .filter((g) => g.status === "active")
      // Someone who is leaving a group already is no reason to leave it.
      .filter((g) => client.members(g.groupId).some((m) => !m.self && !m.leaving && people.has(m.acct)));
    if (theirs.length === 0) cli.io.out(`No group of yours has ${[...people].join(", ")} in it.`);
    for (const g of theirs) ids.add(g.groupId);
  }
  let first: { error: unknown } | undefined;
  for (const id of ids) {
    try {
      await withProgress(cli.io, `Leaving ${id.slice(0, 8)}`, () => client.leave(id));
      cli.io.out(
        `Left group ${id}. Its keys are deleted here; its history stays (${cli.cmd(`history ${id.slice(0, 8)}`)}).`,
      );
    } catch (e) {
      if (ids.size === 1) throw e;
      first ??= { error: e };
      cli.io.err(`could not leave ${id}: ${explain(e).message}`);
    }
  }
  // The first failure decides the exit code; what it was is on stderr already.
  if (first !== undefined) throw first.error;
}

/**
 * `block <accts…>`: their groups are declined from now on, and (unless `keep`) the groups shared with them
 * now are left. Without accounts: the list.
 */
export async function block(
  cli: Cli,
  accts: string[],
  opts: { keep?: boolean; json?: boolean },
): Promise<void> {
  const { client } = await cli.openClient();
  if (accts.length === 0) {
    const list = client.blocked();
    if (opts.json === true) return json(cli, list);
    cli.io.out(list.length === 0 ? "Nobody is blocked." : list.join("\n"));
    return;
  }
  const people = canonicalAcctArgs(accts);
  const { blocked } = await client.block(people);
  cli.io.out(
    blocked.length === 0
      ? `Already blocked: ${people.join(", ")}.`
      : `Blocked ${blocked.join(", ")}: groups they are in are declined from now on.`,
  );
  if (opts.keep !== true) await leaveGroups(cli, client, [], people);
}

export async function unblock(cli: Cli, accts: string[]): Promise<void> {
  const { client } = await cli.openClient();
  const { unblocked } = await client.unblock(canonicalAcctArgs(accts));
  cli.io.out(unblocked.length === 0 ? "None of them was blocked." : `Unblocked ${unblocked.join(", ")}.`);
}

export async function send(cli: Cli, group: string, words: string[]): Promise<void> {
  let text = words.join(" ");
  if (text === "-") text = await readStdin(cli);
  if (text.trim() === "") throw new UsageError("nothing to send");
  const { client } = await cli.openClient();
  const id = await findGroup(cli, client, group);
  let sent;
  try {
    sent = await withProgress(cli.io, "Sending", async () => {
      const result = await client.send(id, text);
      await client.historyWritten();
      return result;
    });
  } finally {
    // What reading the group's hub before sending brought (D23), on stderr as for the other commands that
    // fetch first: also when the send then fails (a group this device cannot write to, the hub refusing
    // it), since what was read is processed and acknowledged, and no later sync shows it again.
    printEvents(cli, client.takeEvents(), false, true);
  }
  cli.io.out(`sent (#${sent.seq})`);
}

async function readStdin(cli: Cli): Promise<string> {
  const lines: string[] = [];
  for (;;) {
    try {
      lines.push(await cli.io.readLine(""));
    } catch (e) {
      if (e instanceof UsageError) break;
      throw e;
    }
  }
  return lines.join("\n");
}

export async function sync(cli: Cli, opts: { json?: boolean }): Promise<void> {
  const { client } = await cli.openClient();
  const events = await withProgress(cli.io, "Fetching new messages", () => client.sync());
  printEvents(cli, events, opts.json === true);
  // A hub that could not be read is an event (the others are still read); fetching is all sync is for.
  const unread = events.flatMap((e) =>
    e.type === "error" && e.operation.startsWith("sync ") ? [e.operation.slice("sync ".length)] : [],
  );
  if (unread.length > 0) throw new HubsUnreadError([...new Set(unread)]);
}

/** Live events until Ctrl-C (SIGINT) or SIGTERM. */
export async function listen(cli: Cli, opts: { json?: boolean }, signal: AbortSignal): Promise<void> {
  const { client } = await cli.openClient();
  if (opts.json !== true) cli.io.err(`Listening as ${client.acct} (Ctrl-C to stop)`);
  for await (const e of client.events({ signal })) printEvents(cli, [e], opts.json === true);
}

// ---- backup ----

export async function backup(
  cli: Cli,
  opts: { out?: string; passphrase?: boolean; force?: boolean; json?: boolean },
): Promise<void> {
  const { client } = await cli.openClient();
  if (!client.holdsAccountKey) {
    throw new ClientError(
      "no_account_key",
      "this device does not hold the account key: back up from the first device",
    );
  }
  const passphrase = opts.passphrase === true ? await cli.backupPassphrase(true) : undefined;
  const date = new Date().toISOString().slice(0, 10);
  const path = resolve(opts.out ?? `mls-dm-account-key-${client.acct.replace("@", "_at_")}-${date}.txt`);
  const policy = cli.kdfPolicy;
  const made = await withProgress(cli.io, "Sealing the account key (Argon2id)", (report) =>
    client.backupAccountKey({
      ...policy,
      ...(passphrase === undefined ? {} : { passphrase }),
      onProgress: report,
    }),
  );
  const flags =
    constants.O_WRONLY | constants.O_CREAT | (opts.force === true ? constants.O_TRUNC : constants.O_EXCL);
  let handle;
  try {
    handle = await open(path, flags, 0o600);
  } catch (e) {
    if ((e as { code?: unknown }).code === "EEXIST")
      throw new UsageError(`${path} exists; choose another --out or add --force`);
    throw e;
  }
  try {
    // open's mode applies only to a file it creates: one replaced with --force keeps its own (0644…).
    await handle.chmod(0o600);
    await handle.writeFile(made.text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  if (opts.json === true) return json(cli, { file: path, recoveryKey: made.recoveryKey ?? null });
  cli.io.out(`Account key of ${client.acct} backed up to ${path}`);
  cli.io.out("It holds no messages and no groups; restoring it makes a new device (mls-dm restore).");
  if (made.recoveryKey !== undefined) {
    cli.io.out("");
    cli.io.out("Recovery key — shown only now. Write it down and keep it apart from the backup file:");
    cli.io.out("");
    cli.io.out(`    ${made.recoveryKey}`);
    cli.io.out("");
  }
}

// ---- not yet ----

// ---- identity ----

export interface VerifyCliOptions {
  group?: string;
  confirm?: boolean;
  acceptNewKey?: boolean;
  json?: boolean;
}

/** Status and reason, the safety number (digits and QR), the group's epoch authenticator. */
export async function verify(cli: Cli, acctArg: string, opts: VerifyCliOptions): Promise<void> {
  if (opts.confirm === true && opts.acceptNewKey === true) {
    throw new UsageError(
      "--confirm and --accept-new-key go in two steps: accept the key, compare, then confirm",
    );
  }
  const acct = canonicalAcctArgs([acctArg])[0]!;
  const { client } = await cli.openClient();
  const groupId = opts.group === undefined ? undefined : await findGroup(cli, client, opts.group);
  let result = await withProgress(cli.io, `Checking ${acct}`, () =>
    client.verify(acct, groupId === undefined ? {} : { groupId }),
  );
  if (opts.acceptNewKey === true) result = await client.acceptNewKey(acct);
  if (opts.confirm === true) result = await client.confirmSafetyNumber(acct);
  const authenticator = groupId === undefined ? undefined : client.epochAuthenticator(groupId);
  if (opts.json === true) {
    return json(cli, {
      acct: result.acct,
      status: result.status,
      reason: result.reason,
      rule: result.rule,
      accountKey: result.accountKey ?? null,
      safetyNumber: result.safetyNumber?.digits ?? null,
      epochAuthenticator: authenticator ?? null,
    });
  }
  cli.io.out(`${result.acct}: ${result.status}`);
  cli.io.out(`  ${safeText(result.reason)}`);
  if (result.status === "key-changed") {
    cli.io.out(
      "  WARNING: their account key changed without a continuity statement. Someone (their instance's admin, " +
        "or whoever took over the account) may be impersonating them. No new device of theirs will be added.",
    );
    cli.io.out(
      // With the account: `verify` needs it, and the suggestion is copied as it stands.
      `  Check with them in person, compare the safety number below, then: ${cli.cmd(`verify ${result.acct} --accept-new-key`)}`,
    );
  }
  if (result.safetyNumber !== undefined) {
    cli.io.out("");
    cli.io.out("Safety number (compare it with theirs, in person or on a call):");
    for (const line of result.safetyNumber.text.split("\n")) cli.io.out(`  ${line}`);
    cli.io.out("");
    cli.io.out(await safetyNumberQr(result.safetyNumber));
    if (result.status === "verified")
      cli.io.out(`When it matches: ${cli.cmd(`verify ${result.acct} --confirm`)}`);
  }
  if (authenticator !== undefined) cli.io.out(`Group epoch authenticator: ${authenticator}`);
}

export async function devices(cli: Cli, opts: { json?: boolean }): Promise<void> {
  const { client } = await cli.openClient();
  const list = await withProgress(cli.io, "Fetching the device list", () => client.devices());
  if (opts.json === true) return json(cli, list);
  cli.io.out(`Device list version ${list.version} of ${client.acct}:`);
  for (const d of list.devices) {
    const added = new Date(d.addedAt * 1000).toISOString().slice(0, 10);
    cli.io.out(
      `  ${d.deviceId}  ${safeText(d.name)}  added ${added}${d.self ? "  (this device)" : ""}` +
        `${d.registered ? "" : "  (not registered)"}`,
    );
  }
  if (!list.devices.some((d) => d.self)) {
    cli.io.err(
      `This device (${client.deviceId}) is not in the list: it was revoked, or its addition was never ` +
        "published. Other members' clients no longer accept it, and it cannot be added to groups; " +
        "link it again (mls-dm link-device) to use it.",
    );
  }
}

/** The shortest device id prefix `revoke-device` takes: a revocation cannot be undone. */
const MIN_DEVICE_PREFIX = 6;

export async function revokeDevice(cli: Cli, deviceId: string): Promise<void> {
  // Said before anything else, and as it is: "no device Xk3v" for a device that exists misleads.
  if (deviceId.length < MIN_DEVICE_PREFIX) {
    throw new UsageError(
      `${deviceId} is too short: give at least ${MIN_DEVICE_PREFIX} characters of the device id (see mls-dm devices)`,
    );
  }
  const { client } = await cli.openClient();
  const all = (await client.devices()).devices;
  const hits = all.filter((d) => d.deviceId.startsWith(deviceId));
  if (hits.length !== 1) {
    throw new UsageError(
      hits.length > 1 ? `${deviceId} matches several devices` : `no device ${deviceId} (see mls-dm devices)`,
    );
  }
  const id = hits[0]!.deviceId;
  const result = await withProgress(cli.io, "Publishing the new device list and profile proof", () =>
    client.revokeDevice(id),
  );
  cli.io.out(`Revoked ${id}: device list version ${result.version}.`);
  if (result.removedFrom.length > 0) cli.io.out(`Removed from ${result.removedFrom.length} group(s).`);
}

export async function rotateAccountKey(cli: Cli, opts: { json?: boolean }): Promise<void> {
  const { client } = await cli.openClient();
  const result = await withProgress(
    cli.io,
    "Signing the continuity statement, publishing the device list and profile proof",
    () => client.rotateAccountKey(),
  );
  if (opts.json === true) return json(cli, result);
  cli.io.out(`New account key for ${client.acct} (device list version ${result.version}).`);
  cli.io.err(
    "Your contacts' apps follow the change through the continuity statement. Safety numbers change: compare " +
      `again with the people you had verified. Back up the new key now (${cli.cmd("backup")}): the old backup no ` +
      "longer restores.",
  );
}
