import type {
  AppendOutcome,
  AppendWrite,
  CommitOutcome,
  CommitWrite,
  DeliveryStore,
  DeviceInGroup,
  GroupSnapshot,
  Invitation,
  LogEntry,
  MemberRecord,
  Membership,
  NewGroup,
  StoredProposal,
} from "./types.js";

interface GroupData {
  epoch: number;
  roster: Map<number, MemberRecord>;
  leaves: Map<string, number>;
  memberships: Map<string, Membership[]>;
  log: LogEntry[];
  welcomes: Map<number, Uint8Array>;
  proposals: Map<string, StoredProposal>;
  winners: Map<number, string>;
}

/**
 * The embedded default store. Every write runs synchronously from its checks to its last change, with
 * no await in between, which makes it as atomic as the Redis store's Lua scripts within one process.
 */
export class MemoryDeliveryStore implements DeliveryStore {
  private readonly groups = new Map<string, GroupData>();
  private readonly deviceIndex = new Map<string, Map<string, number>>();
  private readonly cursors = new Map<string, Map<string, number>>();
  private readonly invitationQueues = new Map<string, Invitation[]>();

  async createGroup(g: NewGroup): Promise<boolean> {
    if (this.groups.has(g.groupId)) return false;
    this.groups.set(g.groupId, {
      epoch: 0,
      roster: new Map([[0, g.creator]]),
      leaves: new Map([[g.creator.device, 0]]),
      memberships: new Map([[g.creator.device, [{ from: 0, until: null }]]]),
      log: [],
      welcomes: new Map(),
      proposals: new Map(),
      winners: new Map(),
    });
    return true;
  }

  async loadGroup(groupId: string): Promise<GroupSnapshot | undefined> {
    const g = this.groups.get(groupId);
    if (!g) return undefined;
    return {
      groupId,
      epoch: g.epoch,
      seq: g.log.length,
      roster: new Map(g.roster),
      proposals: new Map(g.proposals),
    };
  }

  async commit(groupId: string, w: CommitWrite): Promise<CommitOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    if (g.epoch !== w.expectedEpoch) {
      return {
        ok: false,
        reason: "wrong_epoch",
        epoch: g.epoch,
        winner: g.winners.get(w.expectedEpoch) ?? null,
      };
    }
    const seq = g.log.length + 1;
    g.log.push({ seq, epoch: w.expectedEpoch, sender: w.sender, at: w.at, message: w.message });
    g.epoch = w.expectedEpoch + 1;
    g.winners.set(w.expectedEpoch, w.hash);
    g.proposals.clear();
    for (const leaf of w.removes) {
      const member = g.roster.get(leaf);
      if (!member) continue;
      g.roster.delete(leaf);
      g.leaves.delete(member.device);
      const stretches = g.memberships.get(member.device);
      const last = stretches?.at(-1);
      if (last && last.until === null) last.until = seq;
    }
    for (const { leaf, member } of w.adds) {
      g.roster.set(leaf, member);
      g.leaves.set(member.device, leaf);
      const stretches = g.memberships.get(member.device) ?? [];
      stretches.push({ from: seq, until: null });
      g.memberships.set(member.device, stretches);
    }
    if (w.welcome) g.welcomes.set(seq, w.welcome);
    return { ok: true, seq, epoch: g.epoch };
  }

  async append(groupId: string, w: AppendWrite): Promise<AppendOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    if (g.leaves.get(w.sender) !== w.leaf) return { ok: false, reason: "not_a_member" };
    if (w.kind === "proposal") {
      if (w.epoch !== g.epoch) {
        return { ok: false, reason: "wrong_epoch", epoch: g.epoch, winner: g.winners.get(w.epoch) ?? null };
      }
      if (w.ref === undefined || g.proposals.has(w.ref)) return { ok: false, reason: "duplicate_proposal" };
      g.proposals.set(w.ref, { message: w.message, senderLeaf: w.leaf });
    } else {
      if (w.epoch > g.epoch) return { ok: false, reason: "wrong_epoch", epoch: g.epoch, winner: null };
      if (w.epoch < g.epoch - w.window) return { ok: false, reason: "stale_epoch", epoch: g.epoch };
    }
    const seq = g.log.length + 1;
    g.log.push({ seq, epoch: w.epoch, sender: w.sender, at: w.at, message: w.message });
    return { ok: true, seq, epoch: g.epoch };
  }

  async winningCommit(groupId: string, epoch: number): Promise<string | null> {
    return this.groups.get(groupId)?.winners.get(epoch) ?? null;
  }

  async indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void> {
    const index = this.deviceIndex.get(device) ?? new Map<string, number>();
    this.deviceIndex.set(device, index);
    for (const id of groupIds) if (!index.has(id)) index.set(id, index.size + 1);
  }

  async deviceGroups(device: string): Promise<ReadonlyMap<string, number>> {
    return new Map(this.deviceIndex.get(device));
  }

  async memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined> {
    const g = this.groups.get(groupId);
    const stretches = g?.memberships.get(device);
    if (!g || !stretches) return undefined;
    return { seq: g.log.length, memberships: stretches.map((m) => ({ ...m })) };
  }

  async readLog(groupId: string, from: number, to: number): Promise<LogEntry[]> {
    const g = this.groups.get(groupId);
    if (!g || to < from) return [];
    return g.log.slice(Math.max(from, 1) - 1, to);
  }

  async welcome(groupId: string, seq: number): Promise<Uint8Array | undefined> {
    return this.groups.get(groupId)?.welcomes.get(seq);
  }

  async cursor(device: string): Promise<ReadonlyMap<string, number>> {
    return new Map(this.cursors.get(device));
  }

  async advanceCursor(device: string, positions: ReadonlyMap<string, number>): Promise<void> {
    const stored = this.cursors.get(device) ?? new Map<string, number>();
    this.cursors.set(device, stored);
    for (const [key, pos] of positions) if (pos > (stored.get(key) ?? -1)) stored.set(key, pos);
  }

  async queueInvitation(acct: string, invitation: Invitation): Promise<number> {
    const queue = this.invitationQueues.get(acct) ?? [];
    this.invitationQueues.set(acct, queue);
    queue.push(invitation);
    return queue.length;
  }

  async invitationCount(acct: string): Promise<number> {
    return this.invitationQueues.get(acct)?.length ?? 0;
  }

  async invitations(acct: string, after: number, max: number) {
    const queue = this.invitationQueues.get(acct) ?? [];
    return queue.slice(after, after + max).map((invitation, i) => ({ seq: after + i + 1, invitation }));
  }

  async ready(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}
