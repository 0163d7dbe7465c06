import { createHash } from "node:crypto";
import {
  cipherSuite,
  type DeviceSigner,
  type MemberVerification,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import { fromBase64url, parseAcct } from "@mastodon-mls/protocol";
import type { CiphersuiteImpl, ClientState } from "ts-mls";
import { ClientError } from "./errors.js";
import type { DmEvent } from "./events.js";
import { HistoryFlusher } from "./groups/outbox.js";
import { ownSignedList } from "./identity/accountList.js";
import { DevicePinStore } from "./identity/pins.js";
import { MemberVerifier, type IdentityOptions } from "./identity/verifier.js";
import {
  changedSecretNodes,
  decodeState,
  decodeStateDelta,
  encodeState,
  encodeStateDelta,
} from "./mls/codec.js";
import type { DeviceStore } from "./store/deviceStore.js";
import { StoreFormatError } from "./store/records.js";
import type { CursorsRecord, DeviceRecord, GroupRecord, PendingCommitRecord } from "./store/schemas.js";
import { DeliveryClient } from "./transport/deliveryClient.js";
import { DirectoryClient } from "./transport/directoryClient.js";
import type { StreamSubmitter } from "./transport/inboxStream.js";
import type { ServiceResolver } from "./transport/resolver.js";
import { reachFor } from "./transport/publicReach.js";
import { checkServiceUrl } from "./transport/serviceUrl.js";
import type { RetryPolicy } from "./util/backoff.js";

/** How long a hub named by an invitation is polled while none of this device's groups is there. */
export const INVITED_HUB_SECONDS = 14 * 24 * 3600;
/** At most this many such hubs are polled; the most recently named ones are kept. */
export const MAX_IDLE_HUBS = 32;

/** A group as held in memory: the record as on disk, its live MLS state, and a commit awaiting the hub. */
export interface GroupHandle {
  record: GroupRecord;
  /** Undefined once the group is left. Always replaced, never mutated (ts-mls states are values). */
  state: ClientState | undefined;
  pending: PendingCommitRecord | undefined;
  /** The base snapshot on disk that `state`'s tree and past epochs come from (see `saveGroup`). */
  base?: StateBase;
}

/** A written base snapshot, and the very objects of the state it holds that the deltas build on. */
export interface StateBase {
  name: string;
  ratchetTree: ClientState["ratchetTree"];
  historicalReceiverData: ClientState["historicalReceiverData"];
  secretTree: ClientState["secretTree"];
}

/** The base snapshot `name`, which holds `state` whole. */
export function baseOf(name: string, state: ClientState): StateBase {
  return {
    name,
    ratchetTree: state.ratchetTree,
    historicalReceiverData: state.historicalReceiverData,
    secretTree: state.secretTree,
  };
}

/** Everything the operations of one device share. Owned by MlsDmClient; not part of the public API. */
export class DeviceContext {
  readonly signer: DeviceSigner;
  readonly signatureKeyPair: SigningKeyPair;
  readonly home: { directory: DirectoryClient; delivery: DeliveryClient };
  /**
   * While listening (`events()`): per group, when (performance.now() ms) this device commits the proposals
   * it holds, a random moment after it first saw them (groups/followUp.ts); in memory only.
   */
  readonly proposalHolds = new Map<string, number>();
  /**
   * The hubs' streams open in this process (`events()`), by hub URL: an application message goes over
   * its hub's stream when there is one, without a request of its own (docs/decisions.md D6).
   */
  readonly streamSubmitters = new Map<string, StreamSubmitter>();
  /** A Welcome used one of this device's KeyPackages since the directory's count was last checked. */
  keyPackageUsed = false;
  /** Member verification (profile proofs, device lists, pins): one shared resolver and cache. */
  readonly verifier: MemberVerifier;
  /**
   * The last status seen per group and acct (with each leaf's verdict), from `verifyMembers`/`sync`. In
   * memory: a new process starts from the offline checks and verifies again.
   */
  readonly statuses = new Map<string, Map<string, MemberVerification>>();
  /** Background fsyncs of the history lines of sent messages (groups/outbox.ts). */
  readonly historyFlusher = new HistoryFlusher(this);
  /**
   * Hubs read to their end by this process: a send first reads its group's hub once (D23), so that a
   * directory put back from an older copy learns it before it hands out a used key generation.
   */
  readonly readHubs = new Set<string>();
  private readonly deliveries = new Map<string, DeliveryClient>();
  private readonly queued: DmEvent[] = [];
  private readonly listeners = new Set<() => void>();

  private constructor(
    readonly store: DeviceStore,
    public device: DeviceRecord,
    public cursors: CursorsRecord,
    readonly groups: Map<string, GroupHandle>,
    readonly resolver: ServiceResolver,
    readonly cs: CiphersuiteImpl,
    readonly retry: RetryPolicy,
    /** Milliseconds since the Unix epoch; injectable for tests (weekly self-update). */
    readonly clock: () => number,
    readonly pins: DevicePinStore,
    identity: IdentityOptions,
  ) {
    this.signatureKeyPair = {
      publicKey: fromBase64url(device.deviceKey.publicKey),
      signKey: fromBase64url(device.deviceKey.signKey),
    };
    this.signer = { certificate: fromBase64url(device.certificate), signKey: this.signatureKeyPair.signKey };
    this.home = {
      directory: new DirectoryClient(checkServiceUrl(device.home.directory)),
      delivery: this.delivery(device.home.delivery),
    };
    this.verifier = new MemberVerifier(
      // Real time: certificates and lists are checked against it, like KeyPackages (the injectable clock
      // drives the weekly self-update only).
      {
        services: resolver,
        directoryOf: (d) => this.directoryOf(d),
        pins,
        clock: Date.now,
        ownList: () => ownSignedList(this.device),
      },
      identity,
    );
  }

  static async load(
    store: DeviceStore,
    resolver: ServiceResolver,
    retry: RetryPolicy,
    clock: () => number = Date.now,
    identity: IdentityOptions = {},
  ): Promise<DeviceContext> {
    const device = await store.readDevice();
    const cursors = await store.readCursors();
    const groups = await readGroups(store);
    const pins = await DevicePinStore.load(store);
    return new DeviceContext(
      store,
      device,
      cursors,
      groups,
      resolver,
      await cipherSuite(),
      retry,
      clock,
      pins,
      identity,
    );
  }

  /**
   * Re-reads everything from disk, in place (the objects holding this context keep working): another
   * process changed the directory since this one last looked.
   */
  async reload(): Promise<void> {
    const device = await this.store.readDevice();
    const cursors = await this.store.readCursors();
    const groups = await readGroups(this.store);
    await this.pins.reload();
    this.device = device;
    this.cursors = cursors;
    this.groups.clear();
    for (const [id, g] of groups) this.groups.set(id, g);
  }

  /** Unix seconds, from the injectable clock. */
  nowSeconds(): number {
    return Math.floor(this.clock() / 1000);
  }

  get identity(): string {
    return this.device.identity;
  }

  get deviceId(): string {
    return this.device.deviceId;
  }

  /**
   * A client for the delivery service at `url` (a hub or someone's home), signed as this device. The
   * device's own home is reached wherever it is; a hub or home another party named only at a public
   * address in production (NET-7).
   */
  delivery(url: string): DeliveryClient {
    const base = checkServiceUrl(url);
    let client = this.deliveries.get(base);
    if (client === undefined) {
      const reach = reachFor(this.resolver, base, checkServiceUrl(this.device.home.delivery));
      client = new DeliveryClient(base, this.signer, reach);
      this.deliveries.set(base, client);
    }
    return client;
  }

  async directoryOf(domain: string): Promise<DirectoryClient> {
    if (domain === parseAcct(this.device.acct).domain) return this.home.directory;
    return DirectoryClient.resolvedBy(this.resolver, (await this.resolver.resolve(domain)).directory);
  }

  async homeDeliveryOf(acct: string): Promise<DeliveryClient> {
    const domain = parseAcct(acct).domain;
    if (domain === parseAcct(this.device.acct).domain) return this.home.delivery;
    return this.delivery((await this.resolver.resolve(domain)).delivery);
  }

  group(groupId: string): GroupHandle {
    const g = this.groups.get(groupId);
    if (g === undefined) throw new ClientError("unknown_group", `this device is not in group ${groupId}`);
    return g;
  }

  activeGroup(groupId: string): GroupHandle & { state: ClientState } {
    const g = this.group(groupId);
    if (g.record.status !== "active" || g.state === undefined) {
      throw new ClientError("group_left", `this device is no longer in group ${groupId}`);
    }
    return g as GroupHandle & { state: ClientState };
  }

  /**
   * Writes the group record with its current state: the one place group state reaches the disk. The
   * ratchet tree, past epochs' receiver data and the secret tree (most of a large group's state) change
   * with the epoch: they go into a base snapshot, written durably and named by its hash, and group.json
   * carries the rest plus the few secret-tree nodes a message changed (codec.ts). ts-mls states are
   * values, so "changed" is "another object". A new base is written when the tree or past epochs changed,
   * or when a quarter of the secret tree differs from the base's (each such node then costs more in
   * group.json than in the base). The snapshot a group.json names is always on disk before it; the
   * others (but a pending commit's) are deleted after.
   */
  async saveGroup(g: GroupHandle): Promise<void> {
    const id = g.record.groupId;
    const previous = g.record.stateBase;
    if (g.state === undefined) {
      g.record.state = null;
      delete g.record.stateBase;
      delete g.record.secretNodes;
      g.base = undefined;
    } else {
      const s = g.state;
      if (
        g.base?.ratchetTree !== s.ratchetTree ||
        g.base.historicalReceiverData !== s.historicalReceiverData ||
        changedSecretNodes(s, g.base.secretTree).length * 4 > Math.max(s.secretTree.length, 16)
      ) {
        g.base = await this.writeBase(id, s);
      }
      const delta = encodeStateDelta(s, g.base.secretTree);
      g.record.state = delta.state;
      g.record.secretNodes = delta.secretNodes;
      g.record.stateBase = g.base.name;
    }
    await this.store.writeGroup(g.record);
    if (previous !== g.record.stateBase) {
      const keep = [g.record.stateBase, g.pending?.newStateBase].filter((n) => n !== undefined);
      await this.store.deleteGroupBases(id, keep);
    }
  }

  /** Writes `state` whole as a base snapshot of the group (unless that very snapshot is on disk). */
  async writeBase(groupId: string, state: ClientState): Promise<StateBase> {
    const { base, text } = await this.prepareBase(groupId, state);
    if (text !== undefined) await this.store.writeGroupBase(groupId, base.name, text);
    return base;
  }

  /** `state` whole as a base snapshot: its name, and its text unless that very snapshot is on disk. */
  async prepareBase(groupId: string, state: ClientState): Promise<{ base: StateBase; text?: string }> {
    const whole = encodeState(state);
    const name = createHash("sha256").update(whole).digest("base64url");
    const base = baseOf(name, state);
    return (await this.store.hasGroupBase(groupId, name)) ? { base } : { base, text: whole };
  }

  async saveDevice(): Promise<void> {
    await this.store.writeDevice(this.device);
  }

  /** Every hub this device listens to: its home, its groups' hubs, hubs it was invited to. */
  hubs(): string[] {
    const all = new Set<string>([this.home.delivery.baseUrl, ...Object.keys(this.cursors.hubs)]);
    for (const g of this.groups.values()) if (g.record.status === "active") all.add(g.record.hub);
    return [...all];
  }

  /** A hub an invitation pointed to: polled from now on, for a while even if no Welcome comes (`pruneHubs`). */
  async rememberHub(hub: string): Promise<boolean> {
    const base = checkServiceUrl(hub);
    if (base in this.cursors.hubs) return false;
    this.cursors = {
      ...this.cursors,
      hubs: { ...this.cursors.hubs, [base]: null },
      invitedAt: { ...this.cursors.invitedAt, [base]: this.nowSeconds() },
    };
    await this.store.writeCursors(this.cursors);
    await this.pruneHubs();
    return true;
  }

  /**
   * Hubs that host none of this device's active groups (invitations that led nowhere, groups left) nor
   * own messages waiting to be settled are forgotten once the invitation is INVITED_HUB_SECONDS old, and
   * beyond the MAX_IDLE_HUBS most recent: anyone can send invitations naming any URL, and each hub is
   * polled on every sync and listened to.
   */
  async pruneHubs(): Promise<void> {
    const busy = new Set<string>([this.home.delivery.baseUrl]);
    for (const g of this.groups.values()) {
      // A left group's hub too while own messages there wait to be settled by a read of it (outbox.ts),
      // or the group is still to be left there (departure.ts).
      if (
        g.record.status === "active" ||
        (g.record.outbox?.length ?? 0) > 0 ||
        g.record.departPendingSince !== undefined
      ) {
        busy.add(g.record.hub);
      }
    }
    const invitedAt = this.cursors.invitedAt ?? {};
    const idle = Object.keys(this.cursors.hubs)
      .filter((h) => !busy.has(h))
      .sort((x, y) => (invitedAt[y] ?? 0) - (invitedAt[x] ?? 0));
    const now = this.nowSeconds();
    const gone = idle.filter((h, i) => i >= MAX_IDLE_HUBS || now - (invitedAt[h] ?? 0) > INVITED_HUB_SECONDS);
    if (gone.length === 0) return;
    const hubs = { ...this.cursors.hubs };
    const since = { ...invitedAt };
    for (const h of gone) {
      delete hubs[h];
      delete since[h];
    }
    this.cursors = { hubs, invitedAt: since };
    await this.store.writeCursors(this.cursors);
  }

  async saveCursor(hub: string, cursor: string): Promise<void> {
    this.cursors = { ...this.cursors, hubs: { ...this.cursors.hubs, [hub]: cursor } };
    await this.store.writeCursors(this.cursors);
  }

  async clearCursor(hub: string): Promise<void> {
    this.cursors = { ...this.cursors, hubs: { ...this.cursors.hubs, [hub]: null } };
    await this.store.writeCursors(this.cursors);
  }

  emit(event: DmEvent): void {
    this.queued.push(event);
    for (const wake of this.listeners) wake();
  }

  drainEvents(): DmEvent[] {
    return this.queued.splice(0, this.queued.length);
  }

  /** Called whenever an event is queued; returns the unsubscribe function. */
  onEvent(wake: () => void): () => void {
    this.listeners.add(wake);
    return () => this.listeners.delete(wake);
  }
}

async function readGroups(store: DeviceStore): Promise<Map<string, GroupHandle>> {
  const groups = new Map<string, GroupHandle>();
  for (const id of await store.listGroupIds()) {
    const record = await store.readGroup(id);
    if (record === undefined) continue;
    const pending = record.status === "active" ? await store.readPending(id) : undefined;
    const { state, base } = await loadGroupState(store, record);
    groups.set(id, { record, state, pending, ...(base === undefined ? {} : { base }) });
  }
  return groups;
}

/** A group record's state: whole (earlier files), or its delta on the base snapshot it names. */
export async function loadGroupState(
  store: DeviceStore,
  record: GroupRecord,
): Promise<{ state: ClientState | undefined; base?: StateBase }> {
  const where = `${store.groupsDir}/${record.groupId}/group.json`;
  if (record.state === null) return { state: undefined };
  try {
    if (record.stateBase === undefined) return { state: decodeState(record.state) };
    const baseState = await readBase(store, record.groupId, record.stateBase, where);
    const state = decodeStateDelta(record.state, baseState, record.secretNodes);
    return { state, base: baseOf(record.stateBase, baseState) };
  } catch (e) {
    if (e instanceof StoreFormatError) throw e;
    throw new StoreFormatError(
      where,
      `the MLS group state does not decode (${e instanceof Error ? e.message : String(e)})`,
    );
  }
}

/** The state a pending commit leads to, with the base snapshot it is (when it names one). */
export async function loadPendingState(
  store: DeviceStore,
  groupId: string,
  pending: PendingCommitRecord,
): Promise<{ state: ClientState; base?: StateBase }> {
  const where = `${store.groupsDir}/${groupId}/pending.json`;
  try {
    if (pending.newState !== undefined) return { state: decodeState(pending.newState) };
    const name = pending.newStateBase!;
    const state = await readBase(store, groupId, name, where);
    return { state, base: baseOf(name, state) };
  } catch (e) {
    if (e instanceof StoreFormatError) throw e;
    throw new StoreFormatError(
      where,
      `the MLS group state does not decode (${e instanceof Error ? e.message : String(e)})`,
    );
  }
}

async function readBase(
  store: DeviceStore,
  groupId: string,
  name: string,
  where: string,
): Promise<ClientState> {
  const whole = await store.readGroupBase(groupId, name);
  if (whole === undefined) {
    throw new StoreFormatError(where, `the state base base-${name}.json it names is missing`);
  }
  // A base is named by its hash: a damaged one (a directory without encryption has no MAC) is refused
  // here rather than decoded into keys that are silently wrong.
  if (createHash("sha256").update(whole).digest("base64url") !== name) {
    throw new StoreFormatError(
      where,
      `the state base base-${name}.json it names is damaged (its hash differs)`,
    );
  }
  return decodeState(whole);
}
