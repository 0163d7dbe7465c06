import { ProtocolError, parseAcct, toBase64url, type Activity, type InboxItem } from "@mastodon-mls/protocol";
import { buildCreateNote } from "./cleartext.js";
import { DeviceContext } from "./context.js";
import { ServiceUnavailableError } from "./errors.js";
import type { DmEvent } from "./events.js";
import { canonicalAccts, newClaimId, type AddReport } from "./groups/changes.js";
import type { PipelineDeps } from "./groups/commitPipeline.js";
import { createOwnGroup } from "./groups/create.js";
import { followUp } from "./groups/followUp.js";
import { processInboxItems, syncHubInbox } from "./groups/inbox.js";
import { emptyReport, pipelineDeps, runIntent } from "./groups/intents.js";
import { sendActivity } from "./groups/send.js";
import { refillKeyPackages } from "./keyPackages.js";
import { liveEvents, type LiveOptions } from "./liveEvents.js";
import { leavesOf } from "./mls/leaves.js";
import { completeSetup, isResolver, setUpDevice, setupComplete, type CreateDeviceOptions } from "./setup.js";
import { DeviceStore } from "./store/deviceStore.js";
import type { CommitIntent, HistoryEntry } from "./store/schemas.js";
import { WellKnownResolver, type ServiceResolver } from "./transport/resolver.js";
import { DEFAULT_RETRY, type RetryPolicy } from "./util/backoff.js";
import { SerialQueue } from "./util/serial.js";

export interface OpenOptions {
  /** How other instances' services are found. Default: `/.well-known/mls-services` over HTTPS. */
  services?: ServiceResolver;
  /** Retries of commits that lost a race, and stream reconnections. */
  retry?: RetryPolicy;
}

export interface GroupSummary {
  groupId: string;
  hub: string;
  status: "active" | "left";
  /** Undefined once left. */
  epoch: number | undefined;
}

export interface Member {
  acct: string;
  deviceId: string;
  leafIndex: number;
  /**
   * `unverified`: the device certificate verified offline, no profile proof checked yet (the bridge issue
   * adds the real verification statuses). `invalid`: the certificate does not verify.
   */
  status: "unverified" | "invalid";
  reason?: string;
  /** This device's own leaf. */
  self: boolean;
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
  private readonly queue = new SerialQueue();
  private readonly deps: PipelineDeps;

  private constructor(private readonly ctx: DeviceContext) {
    this.deps = pipelineDeps(ctx);
  }

  /** Sets up the first device of an account in `dir` (which must not hold a device yet). */
  static async create(opts: CreateDeviceOptions & { retry?: RetryPolicy }): Promise<MlsDmClient> {
    const resolver = isResolver(opts.services) ? opts.services : new WellKnownResolver();
    const home = isResolver(opts.services)
      ? await opts.services.resolve(parseAcct(opts.acct).domain)
      : opts.services;
    const store = await setUpDevice(opts, home);
    return new MlsDmClient(await DeviceContext.load(store, resolver, opts.retry ?? DEFAULT_RETRY));
  }

  /** Reopens a device directory; finishes a set-up that was cut short. */
  static async open(dir: string, opts: OpenOptions = {}): Promise<MlsDmClient> {
    const store = await DeviceStore.open(dir);
    const device = await store.readDevice();
    if (!setupComplete(device)) await completeSetup(store, device);
    const ctx = await DeviceContext.load(
      store,
      opts.services ?? new WellKnownResolver(),
      opts.retry ?? DEFAULT_RETRY,
    );
    return new MlsDmClient(ctx);
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
  createGroup(members: string[] = []): Promise<{ groupId: string } & AddReport> {
    return this.queue.run(async () => {
      const accts = canonicalAccts(members);
      const groupId = await createOwnGroup(this.ctx);
      const report = emptyReport();
      if (accts.length > 0) await this.commit(groupId, { kind: "add", accts, claimId: newClaimId() }, report);
      return { groupId, ...report };
    });
  }

  /**
   * Adds every device of each account (one KeyPackage claimed per device, each verified before use) and
   * posts an invitation to each account's home delivery service. Refused KeyPackages are reported, never added.
   */
  addMembers(groupId: string, accts: string[]): Promise<AddReport> {
    return this.queue.run(async () => {
      const report = emptyReport();
      await this.commit(
        groupId,
        { kind: "add", accts: canonicalAccts(accts), claimId: newClaimId() },
        report,
      );
      return report;
    });
  }

  /** Removes every device of each account (this device's own leaf excepted). Returns the accounts removed. */
  removeMembers(groupId: string, accts: string[]): Promise<{ removed: string[] }> {
    return this.queue.run(async () => {
      const wanted = canonicalAccts(accts);
      const before = new Set(leavesOf(this.ctx.activeGroup(groupId).state.ratchetTree).map((l) => l.acct));
      await this.commit(groupId, { kind: "remove", accts: wanted });
      return { removed: wanted.filter((a) => before.has(a)) };
    });
  }

  /** A commit with an update path and no proposals: fresh keys for this device's leaf. */
  selfUpdate(groupId: string): Promise<void> {
    return this.queue.run(async () => {
      await this.commit(groupId, { kind: "update" });
    });
  }

  /** Sends a plain-text note (DESIGN §8) to the group. */
  send(groupId: string, text: string, opts: { inReplyTo?: string } = {}): Promise<SendResult> {
    return this.queue.run(async () => {
      const g = this.ctx.activeGroup(groupId);
      // ts-mls refuses to send while holding a received proposal: commit it first.
      if (Object.keys(g.state.unappliedProposals).length > 0) {
        await this.commit(groupId, { kind: "update" });
      }
      const activity = buildCreateNote(this.ctx.identity, text, opts);
      const sent = await sendActivity(this.ctx, groupId, activity, (hub) => syncHubInbox(this.ctx, hub));
      await this.ctx.store.appendHistory(groupId, [ownEntry(this.ctx, sent.seq, activity)]);
      return { ...sent, activityId: activity.id, noteId: activity.object.id };
    });
  }

  // ---- receiving ----

  /**
   * Polls every hub this device listens to, processes everything in order, finishes pending work (commits
   * whose outcome is unknown, the self-update after joining, invitations, last-resort replacement) and
   * returns the events. A hub that cannot be reached (or refuses) gives an `error` event; the others are
   * still polled.
   */
  sync(): Promise<DmEvent[]> {
    return this.queue.run(async () => {
      const done = new Set<string>();
      for (;;) {
        const next = this.ctx.hubs().filter((h) => !done.has(h));
        if (next.length === 0) break;
        for (const hub of next) {
          done.add(hub);
          try {
            await syncHubInbox(this.ctx, hub);
          } catch (e) {
            // One hub down or refusing must not keep the others from being read. Anything else (a
            // local disk failure, a bug) is not the hub's doing and propagates.
            if (!(e instanceof ServiceUnavailableError || e instanceof ProtocolError)) throw e;
            this.ctx.emit({ type: "error", operation: `sync ${hub}`, message: e.message });
          }
        }
      }
      await this.followUp();
      return this.ctx.drainEvents();
    });
  }

  /**
   * Live events over each hub's WebSocket stream (HTTP polling when a stream keeps failing). Ends when
   * `signal` aborts or the consumer stops iterating. Do not mix with concurrent `sync()` calls: both
   * hand out the same queue of events, each event once.
   */
  events(opts: LiveOptions = {}): AsyncGenerator<DmEvent> {
    return liveEvents(
      this.ctx,
      {
        processBatch: (hub: string, items: InboxItem[], cursor: string) =>
          this.queue.run(async () => {
            await processInboxItems(this.ctx, hub, items, cursor);
            await this.followUp();
          }),
        poll: (hub: string) =>
          this.queue.run(async () => {
            await syncHubInbox(this.ctx, hub);
            await this.followUp();
          }),
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
    }));
  }

  members(groupId: string): Member[] {
    const g = this.ctx.activeGroup(groupId);
    const own = g.state.privatePath.leafIndex;
    return leavesOf(g.state.ratchetTree).map((l) => {
      const check = g.record.leaves[String(l.leafIndex)];
      const status = check?.status ?? "invalid";
      return {
        acct: l.acct,
        deviceId: l.deviceId,
        leafIndex: l.leafIndex,
        status,
        ...(check?.reason !== undefined
          ? { reason: check.reason }
          : check === undefined
            ? { reason: "not checked" }
            : {}),
        self: l.leafIndex === own,
      };
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

  /** Uploads KeyPackages until the directory holds the device's target count; returns how many were added. */
  refillKeyPackages(): Promise<number> {
    return this.queue.run(() => refillKeyPackages(this.ctx));
  }

  private commit(groupId: string, intent: CommitIntent, report: AddReport = emptyReport()): Promise<void> {
    return runIntent(this.ctx, this.deps, groupId, intent, report);
  }

  private followUp(): Promise<void> {
    return followUp(this.ctx, this.deps);
  }
}

function ownEntry(ctx: DeviceContext, seq: number, activity: Activity): HistoryEntry {
  return {
    v: 1,
    seq,
    at: new Date().toISOString(),
    from: ctx.device.acct,
    deviceId: ctx.deviceId,
    own: true,
    content: { kind: "activity", activity },
  };
}
