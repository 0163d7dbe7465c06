import {
  acceptNewKey,
  accountKeyFingerprint,
  confirmPin,
  decodeDeviceCertificate,
  matchesSafetyNumber,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import {
  fromBase64url,
  parseAcct,
  toBase64url,
  type InboxItem,
  type MemberStatusName,
} from "@mastodon-mls/protocol";
import { createAccountKeyBackup, openAccountKeyBackup } from "./backup.js";
import { buildCreateNote } from "./cleartext.js";
import { DeviceContext } from "./context.js";
import type { KdfPolicy } from "./crypto/kdf.js";
import { ClientError, isReportable } from "./errors.js";
import type { DmEvent } from "./events.js";
import { canonicalAccts, leafKeyOf, newClaimId, type AddReport, type Refusal } from "./groups/changes.js";
import type { PipelineDeps } from "./groups/commitPipeline.js";
import { createOwnGroup } from "./groups/create.js";
import { block, unblock } from "./groups/blocking.js";
import {
  PROPOSAL_HOLD_MAX_MS,
  followUp,
  hasOutstandingWork,
  type FollowUpOptions,
} from "./groups/followUp.js";
import { canWrite, groupHealth, selfOf, type GroupHealth } from "./groups/forks.js";
import { processInboxItems, syncAllHubs, syncHubInbox } from "./groups/inbox.js";
import { emptyReport, pipelineDeps, runIntent } from "./groups/intents.js";
import { leaveGroup } from "./groups/leave.js";
import { recreatePlan } from "./groups/recreate.js";
import { sendActivity } from "./groups/send.js";
import {
  listOwnDevices,
  missingOwnDevices,
  revokeOwnDevice,
  verifyAccount,
  prefetchGroupMembers,
  verifyGroupMembers,
  type AccountDevice,
  type Prefetched,
  type VerifyOptions,
  type VerifyResult,
} from "./identity/members.js";
import { publishAccountList } from "./identity/accountList.js";
import { rotateAccountKey, type Rotation } from "./identity/rotation.js";
import { DIRECTORY_TTL_MS, type IdentityOptions } from "./identity/verifier.js";
import { refillKeyPackages } from "./keyPackages.js";
import { liveEvents, type LiveOptions } from "./liveEvents.js";
import { approveLink, type Approval } from "./link/approve.js";
import { decodeLinkCode, sameConfirmation, verifyLinkRequest } from "./link/code.js";
import {
  beginLink,
  finishLink,
  type LinkSetupOptions,
  type PendingLink,
  type WaitOptions,
} from "./link/newDevice.js";
import { leavesOf } from "./mls/leaves.js";
import {
  completeSetup,
  isResolver,
  setUpDevice,
  setupComplete,
  type CreateDeviceOptions,
  type DeviceSetupOptions,
} from "./setup.js";
import type { StoreProtection } from "./store/cipher.js";
import { DeviceStore } from "./store/deviceStore.js";
import { DEFAULT_LOCK_TIMEOUT_MS, acquireDeviceLock } from "./store/lock.js";
import { migrateLegacyStore } from "./store/migrate.js";
import { changeStoreProtection, type ChangeProtectionOptions, type ProtectionChange } from "./store/rekey.js";
import type { CommitIntent, HistoryEntry } from "./store/schemas.js";
import { WellKnownResolver, type ServiceResolver, type ServiceUrls } from "./transport/resolver.js";
import { DEFAULT_RETRY, type RetryPolicy } from "./util/backoff.js";
import { SerialQueue } from "./util/serial.js";

/** How long before verification adds or removes the same device of a group again. */
const RETRY_MEMBER_CHANGE_MS = 10 * 60_000;

export interface ClientOptions extends KdfPolicy {
  /** Retries of commits that lost a race, and stream reconnections. */
  retry?: RetryPolicy;
  /** Milliseconds since the Unix epoch. Default `Date.now`; tests inject one (weekly self-update). */
  clock?: () => number;
  /** How long an operation waits for another process working on the same directory. Default 60 s. */
  lockTimeoutMs?: number;
  /** Argon2id progress while unlocking (it takes seconds), 0…1. */
  onProgress?: (fraction: number) => void;
  /** How accounts are looked up for verification; production needs none of it (development, tests). */
  identity?: IdentityOptions;
}

export interface AddOptions {
  /**
   * Also add devices of accounts whose status is `no-proof` (identity not published) or `unreachable`
   * (could not be checked), on the offline certificate checks alone (docs/decisions.md D8). Never adds
   * a `key-changed`, `invalid`, `revoked`, `stale`, `suspended`, `moved` or `gone` account.
   */
  allowUnverified?: boolean;
}

export interface OpenOptions extends ClientOptions {
  /** How other instances' services are found. Default: `/.well-known/mls-services` over HTTPS. */
  services?: ServiceResolver;
  /** Required when the directory is protected by a passphrase. */
  passphrase?: string;
  /**
   * A new Mastodon token for this device, saved before anything else: finishes a set-up that stopped
   * because the old token lacked a scope (publishing the proof needs `write:accounts`).
   */
  mastodonToken?: string;
}

export interface RestoreOptions extends Omit<CreateDeviceOptions, "acct" | "onProgress">, ClientOptions {
  /** The backup file's text. */
  backup: string;
  /** Its recovery key, or its passphrase (the backup says which). */
  secret: string;
}

/**
 * `condition` (GroupHealth): `ok`; `forked` — a member could not process a commit, this device can go on;
 * `stuck` — this device could not, and can no longer read or send here; `needs_readd` — the hub deleted
 * messages before this device read them. `advice` says what to do.
 */
export interface GroupSummary extends GroupHealth {
  groupId: string;
  hub: string;
  status: "active" | "left";
  /** Undefined once left. */
  epoch: number | undefined;
}

export interface RecreateOptions extends AddOptions {
  /**
   * Accounts to leave out. Default: the senders of the commits that forked the group (none if none did),
   * those only the hub names excepted (docs/protocol.md "Forks", FORK-2).
   */
  without?: string[];
}

export interface RecreateReport extends AddReport {
  /** The new group. */
  groupId: string;
  /** The group it replaces, which stays as it is (leave it once everyone has moved). */
  previous: string;
  /** The accounts left out. */
  without: string[];
  /** Accounts a fork names as its sender on the hub's word only, added all the same (`without` leaves them out). */
  keptUnproven: string[];
}

export interface Member {
  acct: string;
  deviceId: string;
  leafIndex: number;
  /**
   * The account's status (docs/identity.md §6) from the last `sync()`/`verifyMembers()`, or, for this
   * leaf, `invalid` (its certificate failed offline, MV-1/MV-14) or `revoked` (not in the account's list,
   * MV-16). Before this process has verified the account: the status last announced for it in this
   * group (kept in the group record), with `remembered`; `unverified` if it never was.
   */
  status: MemberStatusName | "unverified";
  reason?: string;
  /** `status` is the one last announced, kept from an earlier process; not looked up again yet. */
  remembered?: true;
  /** This device's own leaf. */
  self: boolean;
  /**
   * The device asked to leave the group (its Remove proposal is held, not yet committed): it is on its
   * way out, and `leave --with` no longer counts it as being in the group.
   */
  leaving?: true;
}

export interface SyncOptions {
  /**
   * `wait` (default): the call returns once the members' accounts are verified too, with the
   * `status_changed` events that gave. `background`: it returns once the hubs' items are processed; the
   * lookups go on (DESIGN §2) and their events come with the next `sync()` or from `events()`;
   * `verificationSettled()` tells when they are done.
   */
  verification?: "wait" | "background";
}

export interface SendResult {
  seq: number;
  epoch: number;
  activityId: string;
  noteId: string;
}

export type HistoryItem = Omit<HistoryEntry, "v">;

/**
 * One device of a Mastodon account in end-to-end encrypted group conversations (MLS, RFC 9420).
 * Every operation is serialised per device; every change reaches the disk before it is relied on.
 */
export class MlsDmClient {
  /**
   * What opening the device found that its user must hear (also queued as `error` events): a change to
   * the account's device list that could not be published, or was dropped because another device holding
   * the account key published a newer list (a revocation made here, above all). The CLI prints them.
   */
  readonly openNotices: string[] = [];
  private readonly queue = new SerialQueue();
  private readonly deps: PipelineDeps;
  /** The directory's generation as this process last saw or wrote it (see `op`). */
  private generation = "";
  /** groupId → device id → when verifyGroup last added or removed it. */
  private readonly actedOn = new Map<string, Map<string, number>>();
  /** Called after every operation (`events()` re-checks its follow-up timer). */
  private readonly afterOp = new Set<() => void>();
  /** The background verification running now, and the one asked for while it runs (see `verifyLater`). */
  private verifying: Promise<void> | undefined;
  private verifyingNext: Promise<void> | undefined;
  /** When the last background verification had its answers (ms since the epoch; 0: none yet, or failed). */
  private lastVerification = 0;
  /** membershipMark() as the last verification that finished saw it. */
  private verifiedMark: string | undefined;

  private constructor(
    private readonly ctx: DeviceContext,
    private readonly lockTimeoutMs: number,
  ) {
    this.deps = pipelineDeps(ctx);
  }

  /**
   * Sets up the first device of an account in `dir` (absent or empty): a new directory protected as
   * `protection` says, a new account key, the device.
   */
  static async create(opts: CreateDeviceOptions & ClientOptions): Promise<MlsDmClient> {
    const store = await DeviceStore.create(opts.dir, opts.protection, opts);
    return MlsDmClient.createInStore(store, opts);
  }

  /**
   * Sets up a device in a directory that exists but holds no device yet (e.g. after `mls-dm login`).
   * With `accountKey`, the device is certified by that account key (a restore) instead of a new one.
   */
  static async createInStore(
    store: DeviceStore,
    opts: DeviceSetupOptions & ClientOptions,
    accountKey?: SigningKeyPair,
  ): Promise<MlsDmClient> {
    return MlsDmClient.setUpIn(store, opts, (resolver, home, mastodonUrl) =>
      setUpDevice(store, opts, home, accountKey, mastodonUrl),
    );
  }

  /**
   * A new device for an account whose first device is gone (DESIGN §9): the account key from the backup
   * certifies a new device key; the device registers with the home directory and publishes KeyPackages.
   * No group comes back: other members add the new device (device lists and linking: later issue).
   */
  static async restore(opts: RestoreOptions): Promise<MlsDmClient> {
    const restored = await openAccountKeyBackup(opts.backup, opts.secret, opts);
    const store = await DeviceStore.create(opts.dir, opts.protection, opts);
    return MlsDmClient.createInStore(store, { ...opts, acct: restored.acct }, restored.accountKey);
  }

  /**
   * Starts linking a new device in `store` (empty, e.g. after `mls-dm login`): its key, kept in the
   * store, and the link code and confirmation code to show (docs/protocol.md "Linking a device"). Calling
   * it again resumes with the same key.
   */
  static async beginLink(store: DeviceStore, opts: LinkSetupOptions): Promise<PendingLink> {
    const lock = await acquireDeviceLock(store.dir, { timeoutMs: DEFAULT_LOCK_TIMEOUT_MS });
    try {
      return await beginLink(store, opts, Math.floor(Date.now() / 1000));
    } finally {
      await lock.release();
    }
  }

  /**
   * Waits until a device holding the account key approved the link (`approveLink` there), checks the
   * certificate against the account's profile proof, and sets this device up: registration, KeyPackages.
   * Its groups come as Welcomes once the other device adds it (`addOwnDevices`, or its next sync).
   */
  static async finishLink(
    store: DeviceStore,
    opts: LinkSetupOptions & ClientOptions & { services: ServiceResolver | ServiceUrls },
    wait: WaitOptions,
  ): Promise<MlsDmClient> {
    return MlsDmClient.setUpIn(store, opts, (resolver, home, mastodonUrl) =>
      finishLink(store, { ...opts, ...(mastodonUrl === undefined ? {} : { mastodonUrl }) }, resolver, home, {
        ...wait,
        ...(opts.identity === undefined ? {} : { identity: opts.identity }),
      }),
    );
  }

  /**
   * A device set up in `store` by `work` (a first device, a restored or a linked one), under the
   * directory's lock, then opened: the services and Mastodon origin `work` needs are resolved here once.
   */
  private static async setUpIn(
    store: DeviceStore,
    opts: ClientOptions & { acct: string; mastodonUrl?: string; services: ServiceResolver | ServiceUrls },
    work: (resolver: ServiceResolver, home: ServiceUrls, mastodonUrl: string | undefined) => Promise<unknown>,
  ): Promise<MlsDmClient> {
    const resolver: ServiceResolver = isResolver(opts.services) ? opts.services : new WellKnownResolver();
    const domain = parseAcct(opts.acct).domain;
    const home = isResolver(opts.services) ? await opts.services.resolve(domain) : opts.services;
    const mastodonUrl = opts.mastodonUrl ?? resolver.mastodonOrigin?.(domain);
    const timeout = opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    const lock = await acquireDeviceLock(store.dir, { timeoutMs: timeout });
    try {
      await work(resolver, home, mastodonUrl);
      const ctx = await DeviceContext.load(
        store,
        resolver,
        opts.retry ?? DEFAULT_RETRY,
        opts.clock,
        opts.identity,
      );
      const client = new MlsDmClient(ctx, timeout);
      client.generation = store.bumpGeneration();
      return client;
    } finally {
      await lock.release();
    }
  }

  /** Reopens a device directory (unlocking it with the passphrase); finishes a set-up that was cut short. */
  static async open(dir: string, opts: OpenOptions = {}): Promise<MlsDmClient> {
    return MlsDmClient.openStore(await DeviceStore.open(dir, opts), opts);
  }

  /** A client for an unlocked directory that holds a device. */
  static async openStore(store: DeviceStore, opts: OpenOptions = {}): Promise<MlsDmClient> {
    const timeout = opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    const lock = await acquireDeviceLock(store.dir, { timeoutMs: timeout });
    try {
      store.beginOperation();
      const generation = store.readGeneration();
      const writes = store.writes;
      let device = await store.readDevice();
      if (opts.mastodonToken !== undefined && opts.mastodonToken !== device.mastodonToken) {
        device = { ...device, mastodonToken: opts.mastodonToken };
        await store.writeDevice(device);
      }
      let listProblem: string | undefined;
      if (setupComplete(device)) {
        // Nothing left to finish.
      } else if (device.lastResort.ref !== "") {
        // Registered: only the account's device list is left to publish (an approval or revocation whose
        // request failed). The device works meanwhile; a failure is reported, and the next open, approval
        // or revocation tries again. Failing the open would lock the user out of every group over it.
        try {
          await publishAccountList(store, device);
        } catch (e) {
          if (!isReportable(e)) throw e;
          listProblem = e.message;
        }
      } else {
        await completeSetup(store, device);
      }
      const ctx = await DeviceContext.load(
        store,
        opts.services ?? new WellKnownResolver(),
        opts.retry ?? DEFAULT_RETRY,
        opts.clock,
        opts.identity,
      );
      if (listProblem !== undefined) {
        ctx.emit({ type: "error", operation: "publishing the account's device list", message: listProblem });
      }
      const client = new MlsDmClient(ctx, timeout);
      if (listProblem !== undefined) client.openNotices.push(listProblem);
      client.generation = store.writes !== writes ? store.readGeneration() : generation;
      return client;
    } finally {
      await lock.release();
    }
  }

  /**
   * Converts a directory of the first release (format 1, unencrypted) to the current format, protected
   * as asked. Crash-safe: an interrupted migration is finished by the next open, or redone.
   */
  static async migrate(
    dir: string,
    protection: StoreProtection,
    opts: KdfPolicy & { onProgress?: (fraction: number) => void } = {},
  ): Promise<void> {
    await migrateLegacyStore(dir, protection, opts);
  }

  /**
   * Changes how the directory is protected, unlocking it with `current.passphrase` first (a wrong one:
   * `wrong_passphrase`, nothing changed). A new passphrase rewrites `store-key.json` only (same data key,
   * fresh salt, current KDF parameters); switching between a passphrase and `{kind: "none"}` rewrites every
   * file, crash-safely (store/rekey.ts). Takes the directory's lock; after a switch, a process that had the
   * directory open stops at its next operation (open it again).
   */
  static async changePassphrase(
    dir: string,
    current: { passphrase?: string },
    protection: StoreProtection,
    opts: ChangeProtectionOptions = {},
  ): Promise<ProtectionChange> {
    return changeStoreProtection(dir, current, protection, opts);
  }

  /**
   * Every operation: one at a time in this process (the queue), and across processes (the directory's
   * lock file). When another process changed the directory since this one last looked, everything is
   * re-read first; when this one changed it, the generation file says so to the others.
   */
  private op<T>(task: () => Promise<T>): Promise<T> {
    return this.queue.run(async () => {
      const store = this.ctx.store;
      const lock = await acquireDeviceLock(store.dir, { timeoutMs: this.lockTimeoutMs });
      const writes = store.writes;
      try {
        if (!(await store.keyStillValid())) throw this.directoryChanged();
        store.beginOperation();
        const current = store.readGeneration();
        if (current !== this.generation) {
          await this.ctx.reload();
          this.generation = current;
        }
        return await task();
      } finally {
        try {
          // The first write announced this operation (DeviceStore.beginOperation): the marker is ours.
          if (store.writes !== writes) this.generation = store.readGeneration();
        } finally {
          await lock.release();
          for (const listener of this.afterOp) {
            // A listener's failure must not replace the operation's own result or error.
            try {
              listener();
            } catch (e) {
              this.ctx.emit({
                type: "error",
                operation: "after an operation",
                message: e instanceof Error ? e.message : String(e),
              });
            }
          }
        }
      }
    });
  }

  private directoryChanged(): ClientError {
    return new ClientError(
      "directory_changed",
      `another process changed how ${this.ctx.store.dir} is protected (change-passphrase) since this one ` +
        "opened it; nothing was written: open it again",
    );
  }

  /** Whether this device holds the account key (the first device, or one restored from a backup). */
  get holdsAccountKey(): boolean {
    return this.ctx.device.accountKey !== null;
  }

  /**
   * LNK-12: base64url SHA-256 of the account key this device holds, or else of the one that certified it
   * (for a linked device, the key it pinned): compared with what the approving device showed, it tells a
   * linked device whether its home instance and directory gave it the account's real key.
   */
  get accountKeyFingerprint(): string {
    const held = this.ctx.device.accountKey;
    return accountKeyFingerprint(
      held !== null
        ? fromBase64url(held.publicKey)
        : decodeDeviceCertificate(fromBase64url(this.ctx.device.certificate)).accountKey,
    );
  }

  /** How the directory is protected. */
  get protection(): "passphrase" | "none" {
    return this.ctx.store.protection;
  }

  /** `user@domain` */
  get acct(): string {
    return this.ctx.device.acct;
  }

  get deviceId(): string {
    return this.ctx.deviceId;
  }

  get dir(): string {
    return this.ctx.store.dir;
  }

  // ---- groups ----

  /** Creates a group hosted on this device's home delivery service and adds `members` (accts). */
  createGroup(members: string[] = [], opts: AddOptions = {}): Promise<{ groupId: string } & AddReport> {
    return this.op(async () => {
      const accts = canonicalAccts(members);
      const groupId = await createOwnGroup(this.ctx);
      const report = emptyReport();
      if (accts.length > 0) await this.commit(groupId, addIntent(accts, opts), report);
      return { groupId, ...report };
    });
  }

  /**
   * A new group with the members of `groupId` but those in `without` (default: the accounts whose commit
   * forked it, as far as this device knows: DESIGN §6, docs/decisions.md D10, docs/protocol.md FORK-2), hosted on this device's home hub — the way on after a
   * fork, also from a device stuck in it. The old group stays as it is and records its replacement.
   */
  recreateGroup(groupId: string, opts: RecreateOptions = {}): Promise<RecreateReport> {
    return this.op(async () => {
      const plan = recreatePlan(this.ctx, groupId, opts.without);
      const newId = await createOwnGroup(this.ctx, { replaces: groupId });
      const old = this.ctx.group(groupId);
      old.record.replacedBy = newId;
      await this.ctx.saveGroup(old);
      const report = emptyReport();
      if (plan.accts.length > 0) await this.commit(newId, addIntent(plan.accts, opts), report);
      return {
        groupId: newId,
        previous: groupId,
        without: plan.without,
        keptUnproven: plan.keptUnproven,
        ...report,
      };
    });
  }

  /**
   * Adds every device of each account (one KeyPackage claimed per device, each verified before use) and
   * posts an invitation to each account's home delivery service. Refused KeyPackages are reported, never added.
   */
  addMembers(groupId: string, accts: string[], opts: AddOptions = {}): Promise<AddReport> {
    return this.op(async () => {
      const report = emptyReport();
      await this.commit(groupId, addIntent(canonicalAccts(accts), opts), report);
      return report;
    });
  }

  /** Removes every device of each account (this device's own leaf excepted). Returns the accounts removed. */
  removeMembers(groupId: string, accts: string[]): Promise<{ removed: string[] }> {
    return this.op(async () => {
      const wanted = canonicalAccts(accts);
      const before = new Set(leavesOf(this.ctx.activeGroup(groupId).state.ratchetTree).map((l) => l.acct));
      await this.commit(groupId, { kind: "remove", accts: wanted });
      return { removed: wanted.filter((a) => before.has(a)) };
    });
  }

  /**
   * Leaves a group (DESIGN §9): proposes the Remove of this account's leaves, deletes the group's state
   * here, and leaves it at its hub (D17: groups/departure.ts); another member commits the Removes. The
   * history stays readable.
   */
  leave(groupId: string): Promise<{ proposed: number }> {
    return this.op(() => leaveGroup(this.ctx, this.deps, groupId));
  }

  /**
   * Blocks accounts (D17, groups/blocking.ts): from now on a group any of them is in is declined when its
   * Welcome arrives (left at once, nothing sent), and invitations naming them are dropped. Groups this
   * device is in already are not touched (`leave`). Returns the accounts newly blocked.
   */
  block(accts: string[]): Promise<{ blocked: string[] }> {
    return this.op(async () => ({ blocked: await block(this.ctx, accts) }));
  }

  /** Takes accounts off the block list; returns those that were on it. */
  unblock(accts: string[]): Promise<{ unblocked: string[] }> {
    return this.op(async () => ({ unblocked: await unblock(this.ctx, accts) }));
  }

  /** The accounts this device blocks (`user@domain`). */
  blocked(): string[] {
    return [...(this.ctx.device.blocked ?? [])];
  }

  /** A commit with an update path and no proposals: fresh keys for this device's leaf. */
  selfUpdate(groupId: string): Promise<void> {
    return this.op(async () => {
      await this.commit(groupId, { kind: "update" });
    });
  }

  /**
   * Removes single devices of the group (ids, or unique prefixes of at least 8 characters, as `members`
   * shows them); their accounts' other devices stay. For a device that can no longer follow the group
   * (stuck after a fork, or behind retention), `readdDevices` removes and adds it in one commit. This
   * device cannot remove itself (`leave`).
   */
  removeDevices(
    groupId: string,
    deviceIds: string[],
  ): Promise<{ removed: { acct: string; deviceId: string }[] }> {
    return this.op(async () => {
      const picked = this.pickDevices(groupId, deviceIds);
      await this.commit(groupId, { kind: "remove-devices", deviceIds: picked.map((p) => p.deviceId) });
      const left = new Set(leavesOf(this.ctx.activeGroup(groupId).state.ratchetTree).map((l) => l.deviceId));
      return {
        removed: picked
          .filter((p) => !left.has(p.deviceId))
          .map(({ acct, deviceId }) => ({ acct, deviceId })),
      };
    });
  }

  /**
   * Gives devices of the group (named as for `removeDevices`) a fresh start in one commit: their leaves
   * are removed and each is added again from a KeyPackage claimed for it, verified as for `addMembers`.
   * This is the remedy for a device stuck after a fork or behind retention; the accounts' other devices
   * are not touched. A device whose KeyPackage is refused (or that has none left) is still removed, and
   * the refusal is reported: `addMembers` of its account adds it later. A device whose leaf a commit
   * that won meanwhile changed (its own key update, or another member's re-add) is left as it is and named
   * in `skipped`: ask again if it still needs a fresh start.
   */
  readdDevices(
    groupId: string,
    deviceIds: string[],
    opts: AddOptions = {},
  ): Promise<
    AddReport & {
      removed: { acct: string; deviceId: string }[];
      skipped: { acct: string; deviceId: string }[];
    }
  > {
    return this.op(async () => {
      const picked = this.pickDevices(groupId, deviceIds);
      const report = emptyReport();
      await this.commit(
        groupId,
        {
          kind: "readd",
          replacing: Object.fromEntries(picked.map((p) => [p.deviceId, p.leafKey])),
          accts: [...new Set(picked.map((p) => p.acct))],
          claimId: newClaimId(),
          ...(opts.allowUnverified === true ? { allowUnverified: true } : {}),
        },
        report,
      );
      const readded = new Set(report.added.map((a) => a.deviceId));
      const left = new Set(leavesOf(this.ctx.activeGroup(groupId).state.ratchetTree).map((l) => l.deviceId));
      const removed = picked
        .filter((p) => readded.has(p.deviceId) || !left.has(p.deviceId))
        .map(({ acct, deviceId }) => ({ acct, deviceId }));
      const refused = new Set(report.refused.map((r) => r.deviceId));
      const skipped = picked
        .filter((p) => !removed.some((r) => r.deviceId === p.deviceId) && !refused.has(p.deviceId))
        .map(({ acct, deviceId }) => ({ acct, deviceId }));
      return { removed, skipped, ...report };
    });
  }

  /** Devices of the group by id or unique prefix (8 characters at least), this device's own refused. */
  private pickDevices(
    groupId: string,
    deviceIds: string[],
  ): { acct: string; deviceId: string; leafKey: string }[] {
    const g = this.ctx.activeGroup(groupId);
    const leaves = leavesOf(g.state.ratchetTree);
    const picked = deviceIds.map((prefix) => {
      const found = prefix.length >= 8 ? leaves.filter((l) => l.deviceId.startsWith(prefix)) : [];
      if (found.length !== 1) {
        throw new ClientError(
          found.length === 0 ? "unknown_device" : "bad_input",
          found.length === 0
            ? `no device ${prefix} in group ${groupId} (a device id, or at least its first 8 characters)`
            : `${prefix} names ${found.length} devices of group ${groupId}: give more of the id`,
        );
      }
      if (found[0]!.leafIndex === g.state.privatePath.leafIndex) {
        throw new ClientError(
          "bad_input",
          "this device cannot remove itself from a group (leave it instead)",
        );
      }
      return { acct: found[0]!.acct, deviceId: found[0]!.deviceId, leafKey: leafKeyOf(found[0]!.node) };
    });
    return [...new Map(picked.map((p) => [p.deviceId, p])).values()];
  }

  /** Sends a plain-text note (DESIGN §8) to the group. */
  send(groupId: string, text: string, opts: { inReplyTo?: string } = {}): Promise<SendResult> {
    return this.op(async () => {
      this.ctx.activeGroup(groupId);
      const activity = buildCreateNote(this.ctx.identity, text, opts);
      const sent = await sendActivity(
        this.ctx,
        groupId,
        activity,
        (hub) => syncHubInbox(this.ctx, hub),
        () => this.commit(groupId, { kind: "proposals" }),
      );
      return { ...sent, activityId: activity.id, noteId: activity.object.id };
    });
  }

  // ---- receiving ----

  /**
   * The events other operations brought and no `sync()` or `events()` returned yet: a send reads its
   * group's hub first, once per process (D23), and a send or commit that finds the group moved on reads
   * it again. For a process that neither syncs nor listens afterwards (the CLI's `send` prints them).
   */
  takeEvents(): DmEvent[] {
    return this.ctx.drainEvents();
  }

  /**
   * Polls every hub this device listens to (all at once, at most 8 requests in flight), processes
   * everything in order (hub after hub, in a fixed order; a hub that keeps its answer back more than 2 s
   * lets those that answered go first), finishes pending work (commits whose outcome is
   * unknown, the self-update after joining, invitations, last-resort replacement) and returns the events.
   * A hub that cannot be reached (or refuses) gives an `error` event; the others are still read. Then the
   * members' accounts are verified (profiles and device lists, looked up outside the device's lock):
   * waited for by default, in the background with `{verification: "background"}`.
   */
  async sync(opts: SyncOptions = {}): Promise<DmEvent[]> {
    const events = await this.op(async () => {
      await this.ctx.pruneHubs();
      await syncAllHubs(this.ctx);
      await this.followUp();
      return this.ctx.drainEvents();
    });
    const verified = this.verifyLater();
    if (opts.verification === "background") return events;
    await verified;
    return [...events, ...this.ctx.drainEvents()];
  }

  /**
   * Resolves when no background verification is running or asked for (after `sync({verification:
   * "background"})` or while `events()` runs). Its events wait in the queue for `sync()` or `events()`.
   */
  async verificationSettled(): Promise<void> {
    // The queued pass starts after the running one and ends after it: waiting for it covers both, and
    // passes asked for later (live traffic keeps asking) are not waited for.
    await (this.verifyingNext ?? this.verifying);
  }

  /**
   * Resolves once the history lines of the messages sent so far are on disk. `send` returns when the hub
   * accepted the message; its line is written then and made durable in the background (until then the
   * group's outbox on disk holds the message, so nothing is lost either way).
   */
  historyWritten(): Promise<void> {
    return this.ctx.historyFlusher.settled();
  }

  /**
   * Live events over each hub's WebSocket stream (HTTP polling when a stream keeps failing). Ends when
   * `signal` aborts or the consumer stops iterating. Do not mix with concurrent `sync()` calls: both
   * hand out the same queue of events, each event once. Follow-up work left unfinished (e.g. a commit of
   * received proposals the hub refused for a moment) is run again every `followUpIntervalMs` (30 s) while
   * it lasts, even when nothing arrives.
   */
  events(opts: LiveOptions = {}): AsyncGenerator<DmEvent> {
    // DESIGN §9: proposals received while listening are committed after a random wait (groups/followUp.ts).
    const hold: FollowUpOptions = {
      proposalHoldMs: opts.proposalHoldMs ?? (() => Math.random() * PROPOSAL_HOLD_MAX_MS),
    };
    return liveEvents(
      this.ctx,
      {
        // Verification runs after them, in the background: a slow instance must not hold up messages.
        processBatch: async (hub: string, items: InboxItem[], cursor: string) => {
          try {
            await this.op(async () => {
              await processInboxItems(this.ctx, hub, items, cursor);
              await this.followUp(hold);
            });
          } finally {
            this.verifyAfterLive();
          }
        },
        poll: async (hub: string) => {
          try {
            await this.op(async () => {
              await syncHubInbox(this.ctx, hub);
              await this.followUp(hold);
            });
          } finally {
            this.verifyAfterLive();
          }
        },
        followUp: () =>
          this.op(async () => {
            if (hasOutstandingWork(this.ctx)) await this.followUp(hold);
          }),
        onOperation: (listener: () => void) => {
          this.afterOp.add(listener);
          return () => this.afterOp.delete(listener);
        },
      },
      opts,
    );
  }

  // ---- queries ----

  groups(): GroupSummary[] {
    return [...this.ctx.groups.values()].map((g) => ({
      groupId: g.record.groupId,
      hub: g.record.hub,
      status: g.record.status,
      epoch: g.state === undefined ? undefined : Number(g.state.groupContext.epoch),
      ...groupHealth(g.record, selfOf(this.ctx)),
    }));
  }

  members(groupId: string): Member[] {
    const g = this.ctx.activeGroup(groupId);
    const own = g.state.privatePath.leafIndex;
    const verified = this.ctx.statuses.get(groupId);
    return leavesOf(g.state.ratchetTree).map((l) => {
      const leaving = g.record.leaving.some((x) => x.leafIndex === l.leafIndex && x.deviceId === l.deviceId);
      const base = {
        acct: l.acct,
        deviceId: l.deviceId,
        leafIndex: l.leafIndex,
        self: l.leafIndex === own,
        ...(leaving ? { leaving: true as const } : {}),
      };
      const check = g.record.leaves[String(l.leafIndex)];
      // Offline certificate checks decide at once (MV-1).
      if (check === undefined) return { ...base, status: "invalid", reason: "not checked" };
      if (check.status === "invalid") {
        return {
          ...base,
          status: "invalid",
          ...(check.reason === undefined ? {} : { reason: check.reason }),
        };
      }
      const v = verified?.get(l.acct);
      if (v === undefined) {
        // Only for a leaf the recorded status covered: a device added since is not vouched for by it.
        const last = check.covered === true ? g.record.memberStatuses?.[l.acct] : undefined;
        return last === undefined
          ? { ...base, status: "unverified", reason: "not verified online yet" }
          : {
              ...base,
              status: last,
              reason: "as last verified (not looked up again since this device started)",
              remembered: true,
            };
      }
      const leaf = v.leaves.find((x) => x.deviceId === l.deviceId);
      if (leaf !== undefined && (leaf.state === "invalid" || leaf.state === "revoked")) {
        return { ...base, status: leaf.state, reason: leaf.reason ?? v.reason };
      }
      return { ...base, status: v.status, reason: v.reason };
    });
  }

  /**
   * Verifies every account of the group now (fresh lookups with `fresh`), emitting `status_changed`
   * events for the next `sync()`, and returns `members(groupId)`. `sync()` does this for every group,
   * reusing cached answers (profiles 10 minutes, directory lists 1 minute).
   */
  verifyMembers(groupId: string, opts: { fresh?: boolean } = {}): Promise<Member[]> {
    return this.op(async () => {
      await this.verifyGroup(groupId, opts);
      return this.members(groupId);
    });
  }

  /**
   * One account's status (fresh lookups) and the safety number to compare with them (docs/identity.md
   * §7). With `groupId`, the account's leaves in that group are checked too.
   */
  verify(acct: string, opts: { groupId?: string } = {}): Promise<VerifyResult> {
    return this.op(async () => (await verifyAccount(this.ctx, acct, opts.groupId)).result);
  }

  /**
   * The user compared safety numbers with `acct` and they matched: the pinned key becomes
   * `verified-oob`. With `typed`, the digits (or scanned QR payload) are checked against the number
   * first. Refused unless the account currently verifies under its pinned key.
   */
  confirmSafetyNumber(acct: string, opts: { typed?: string } = {}): Promise<VerifyResult> {
    return this.op(async () => {
      const { result, verification } = await verifyAccount(this.ctx, acct);
      if (verification.accountKey === undefined || result.safetyNumber === undefined) {
        throw new ClientError(
          "not_verified",
          `${result.acct} cannot be confirmed: ${result.status}: ${result.reason}`,
        );
      }
      if (result.status !== "verified" && result.status !== "verified-oob") {
        throw new ClientError(
          "not_verified",
          `${result.acct} is ${result.status} (${result.reason}); ` +
            (result.status === "key-changed"
              ? "accept the new key first, then compare again"
              : "nothing confirmed"),
        );
      }
      if (opts.typed !== undefined && !matchesSafetyNumber(result.safetyNumber, opts.typed)) {
        throw new ClientError("not_verified", "the safety number entered does not match; nothing confirmed");
      }
      if (!(await confirmPin(this.ctx.pins, result.acct, verification.accountKey, this.ctx.nowSeconds()))) {
        throw new ClientError(
          "not_verified",
          `the pinned key of ${result.acct} is another key; nothing confirmed`,
        );
      }
      this.ctx.verifier.forget(result.acct);
      return (await verifyAccount(this.ctx, result.acct)).result;
    });
  }

  /**
   * After `key-changed`, once the user checked with the person: pins the account's new key (unconfirmed;
   * compare safety numbers again for `verified-oob`).
   */
  acceptNewKey(acct: string): Promise<VerifyResult> {
    return this.op(async () => {
      const { result, verification } = await verifyAccount(this.ctx, acct);
      if (result.status !== "key-changed" || verification.accountKey === undefined) {
        throw new ClientError(
          "not_verified",
          `${result.acct} is ${result.status}, not key-changed; nothing changed`,
        );
      }
      await acceptNewKey(this.ctx.pins, result.acct, verification.accountKey, this.ctx.nowSeconds());
      return (await verifyAccount(this.ctx, result.acct)).result;
    });
  }

  /** This account's devices, from the list its home directory serves, verified under the account key. */
  devices(): Promise<{ version: number; devices: AccountDevice[] }> {
    return this.op(() => listOwnDevices(this.ctx));
  }

  /**
   * Revokes one of this account's devices (needs the account key): a new list version without it, to
   * the home directory (which drops its registration and KeyPackages), then the profile proof. Its
   * leaves are removed from this device's groups now, and by the account's other devices as they see
   * the new list (`revoked`).
   */
  revokeDevice(deviceId: string): Promise<{ version: number; removedFrom: string[] }> {
    return this.op(async () => {
      const version = await revokeOwnDevice(this.ctx, deviceId);
      const removedFrom: string[] = [];
      for (const g of [...this.ctx.groups.values()]) {
        if (g.record.status !== "active" || g.state === undefined) continue;
        const before = this.ctx.groups.get(g.record.groupId)!.state!;
        if (!leavesOf(before.ratchetTree).some((l) => l.deviceId === deviceId)) continue;
        try {
          await this.commit(g.record.groupId, { kind: "remove-devices", deviceIds: [deviceId] });
          removedFrom.push(g.record.groupId);
        } catch (e) {
          if (!isReportable(e)) throw e;
          this.ctx.emit({
            type: "error",
            groupId: g.record.groupId,
            operation: "remove a revoked device",
            message: e.message,
          });
        }
      }
      return { version, removedFrom };
    });
  }

  /**
   * Approves a new device's link code (needs the account key): `confirmation` is the code the new device
   * shows beside it, as the person typed it here. A new device list and profile proof name the device,
   * then its certificate goes to the home directory, where the new device picks it up. Nothing changes
   * when the confirmation does not match. Then `addOwnDevices` puts it into the groups.
   */
  approveLink(code: string, confirmation: string): Promise<Approval> {
    return this.op(async () => {
      const request = verifyLinkRequest(
        decodeLinkCode(code),
        this.ctx.device.acct,
        Math.floor(Date.now() / 1000),
      );
      if (!sameConfirmation(confirmation, request.confirmation)) {
        throw new ClientError(
          "bad_link_code",
          "The confirmation code does not match the link code: it was mistyped, or the link code was " +
            "changed on its way. Nothing was changed; compare both screens and try again.",
        );
      }
      return approveLink(this.ctx, request);
    });
  }

  /**
   * Replaces the account key (needs it): a continuity statement signed by the old key, the device list
   * re-signed under the new one, the profile proof. Peers follow the statement (their pins move; a
   * safety-number confirmation does not carry over); devices need no new link. The old backup no longer
   * restores: make a new one.
   */
  rotateAccountKey(): Promise<Rotation> {
    return this.op(() => rotateAccountKey(this.ctx));
  }

  /**
   * DESIGN §3: a user's own devices are kept in every group. Adds this account's listed devices missing
   * from each active group (e.g. one just linked); a device without KeyPackages yet is reported refused.
   */
  addOwnDevices(): Promise<{ groupId: string; added: string[]; refused: Refusal[] }[]> {
    return this.op(async () => {
      const out: { groupId: string; added: string[]; refused: Refusal[] }[] = [];
      // One fresh look at the account's list serves every group.
      this.ctx.verifier.forget(this.ctx.device.acct);
      for (const g of [...this.ctx.groups.values()]) {
        if (g.record.status !== "active" || g.state === undefined) continue;
        const groupId = g.record.groupId;
        if ((await missingOwnDevices(this.ctx, groupId)).length === 0) continue;
        const report = emptyReport();
        await this.commit(groupId, addIntent([this.ctx.device.acct], {}), report);
        out.push({ groupId, added: report.added.map((a) => a.deviceId), refused: report.refused });
      }
      return out;
    });
  }

  epoch(groupId: string): number {
    return Number(this.ctx.activeGroup(groupId).state.groupContext.epoch);
  }

  /** The key schedule's epoch_authenticator (base64url): equal on every member iff they share the epoch. */
  epochAuthenticator(groupId: string): string {
    return toBase64url(this.ctx.activeGroup(groupId).state.keySchedule.epochAuthenticator);
  }

  /** Decrypted messages of a group (own ones included), in the hub's order. Kept after leaving. */
  async history(groupId: string): Promise<HistoryItem[]> {
    this.ctx.group(groupId);
    return (await this.ctx.store.readHistory(groupId)).map(({ v: _v, ...rest }) => rest);
  }

  /**
   * A backup of the account key (DESIGN §9), never of group state. Protected by a new recovery key
   * (returned: show it once) unless a passphrase is given. Only the device holding the account key can.
   */
  backupAccountKey(
    opts: { passphrase?: string; onProgress?: (fraction: number) => void } & KdfPolicy = {},
  ): Promise<{ text: string; recoveryKey?: string }> {
    const key = this.ctx.device.accountKey;
    if (key === null) {
      return Promise.reject(new ClientError("no_account_key", "this device does not hold the account key"));
    }
    return createAccountKeyBackup({
      ...opts,
      acct: this.ctx.device.acct,
      accountKey: { publicKey: fromBase64url(key.publicKey), signKey: fromBase64url(key.signKey) },
      createdAt: this.ctx.nowSeconds(),
    });
  }

  /** Replaces the Mastodon token this device uses with its directory (after logging in again). */
  setMastodonToken(token: string): Promise<void> {
    return this.op(async () => {
      this.ctx.device = { ...this.ctx.device, mastodonToken: token };
      await this.ctx.saveDevice();
    });
  }

  /** Re-reads the directory if another process changed it (queries show this process's last view). */
  refresh(): Promise<void> {
    return this.op(async () => undefined);
  }

  /** How many KeyPackages the home directory holds for this device (the last-resort one not counted). */
  async keyPackageCount(): Promise<number> {
    return (await this.ctx.home.directory.keyPackageCount(this.ctx.deviceId, this.ctx.signer)).count;
  }

  /** Uploads KeyPackages until the directory holds the device's target count; returns how many were added. */
  refillKeyPackages(): Promise<number> {
    return this.op(() => refillKeyPackages(this.ctx));
  }

  private commit(groupId: string, intent: CommitIntent, report: AddReport = emptyReport()): Promise<void> {
    return runIntent(this.ctx, this.deps, groupId, intent, report);
  }

  private followUp(opts: FollowUpOptions = {}): Promise<void> {
    return followUp(this.ctx, this.deps, opts);
  }

  /**
   * Verifies one group's accounts; this account's own revoked devices are removed at once, and its listed
   * devices missing from the group are added (DESIGN §3). With `removeBad` (background verification),
   * other accounts' devices their verified account disowns (`invalid`, `revoked`) are removed too. Adding
   * and removing is tried again for a device at most every 10 minutes: one without KeyPackages yet cannot
   * be added, and a failing commit must not be retried on every sync.
   */
  private async verifyGroup(
    groupId: string,
    opts: VerifyOptions & { removeBad?: boolean } = {},
  ): Promise<void> {
    const { revokedOwn, badLeaves } = await verifyGroupMembers(this.ctx, groupId, opts);
    if (revokedOwn.length > 0) await this.commit(groupId, { kind: "remove-devices", deviceIds: revokedOwn });
    const bad =
      opts.removeBad === true
        ? this.due(
            groupId,
            badLeaves.map((l) => l.deviceId),
          )
        : [];
    if (bad.length > 0) {
      for (const l of badLeaves.filter((x) => bad.includes(x.deviceId))) {
        this.ctx.emit({
          type: "invalid_member",
          groupId,
          acct: l.acct,
          deviceId: l.deviceId,
          reason: `${l.state}: ${l.reason}`,
        });
      }
      await this.commit(groupId, { kind: "remove-devices", deviceIds: bad });
    }
    const missing = this.due(groupId, await missingOwnDevices(this.ctx, groupId));
    if (missing.length > 0) await this.commit(groupId, addIntent([this.ctx.device.acct], {}));
  }

  /** Of these devices of a group, those not acted on in the last 10 minutes; marks them acted on now. */
  private due(groupId: string, deviceIds: string[]): string[] {
    const now = Date.now();
    const tried = this.actedOn.get(groupId) ?? new Map<string, number>();
    const due = deviceIds.filter((id) => now - (tried.get(id) ?? -Infinity) >= RETRY_MEMBER_CHANGE_MS);
    for (const id of due) tried.set(id, now);
    this.actedOn.set(groupId, tried);
    return due;
  }

  /**
   * A verification of every active group that starts after this call (one runs at a time; asking while
   * one runs queues one more, shared by every caller meanwhile). Never rejects: what fails becomes an
   * `error` event.
   */
  private verifyLater(): Promise<void> {
    if (this.verifying === undefined) {
      const run = this.verifyInBackground().finally(() => {
        if (this.verifying === run) this.verifying = undefined;
      });
      this.verifying = run;
      return run;
    }
    this.verifyingNext ??= this.verifying.then(() => {
      this.verifyingNext = undefined;
      return this.verifyLater();
    });
    return this.verifyingNext;
  }

  /**
   * After live traffic: a verification when the groups may have changed members since the last one looked
   * (an epoch moved on, a group was joined or left: by this batch or by any operation since), or when its
   * directory answers are a lifetime old. A pass over the same members with the same cached answers finds
   * what the last one found, and checks every member's signatures again: after every message, that was a
   * whole group's verification per message.
   */
  private verifyAfterLive(): void {
    if (
      this.membershipMark() !== this.verifiedMark ||
      Date.now() - this.lastVerification >= DIRECTORY_TTL_MS
    ) {
      void this.verifyLater();
    }
  }

  /** What changes whenever a group's members may have: its epoch, its status, the set of groups. */
  private membershipMark(): string {
    let mark = "";
    for (const g of this.ctx.groups.values()) {
      mark += `${g.record.groupId}:${g.record.status}:${g.state?.groupContext.epoch ?? "-"};`;
    }
    return mark;
  }

  /**
   * The lookups first, outside the device's lock, so that other operations (and other processes) go on
   * while instances answer; then one operation that verifies from those answers, records the statuses and
   * commits what follows (removals, the account's own missing devices).
   */
  private async verifyInBackground(): Promise<void> {
    // What this pass looks at: a change after this is seen by the next look (verifyAfterLive).
    const mark = this.membershipMark();
    try {
      const prefetched = await prefetchGroupMembers(this.ctx, this.verifiable());
      // The answers are as old as this: the next pass due by age asks again.
      this.lastVerification = Date.now();
      await this.op(() => this.verifyAll(prefetched));
      this.verifiedMark = mark;
    } catch (e) {
      // Tried again after the next live batch.
      this.lastVerification = 0;
      this.verifiedMark = undefined;
      this.ctx.emit({
        type: "error",
        operation: "verify members",
        message: e instanceof Error ? e.message : String(e),
      });
    }
  }

  /** Active groups this device can follow (a stuck one, or one behind retention, takes no commits). */
  private verifiable(): string[] {
    return [...this.ctx.groups.values()]
      .filter((g) => g.record.status === "active" && g.state !== undefined && canWrite(g))
      .map((g) => g.record.groupId);
  }

  /** Verification of every active group; failures become `error` events, never mismatches. */
  private async verifyAll(prefetched: Prefetched): Promise<void> {
    for (const groupId of this.verifiable()) {
      try {
        await this.verifyGroup(groupId, { removeBad: true, prefetched });
      } catch (e) {
        if (!isReportable(e)) throw e;
        this.ctx.emit({
          type: "error",
          groupId,
          operation: "verify members",
          message: e.message,
        });
      }
    }
  }
}

function addIntent(accts: string[], opts: AddOptions): CommitIntent {
  return {
    kind: "add",
    accts,
    claimId: newClaimId(),
    ...(opts.allowUnverified === true ? { allowUnverified: true } : {}),
  };
}
