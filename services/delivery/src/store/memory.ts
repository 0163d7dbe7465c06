import { LIMITS, toBase64url } from "@mastodon-mls/protocol";
import { groupEvent } from "./events.js";
import { DEFAULT_WINNER_EPOCHS, FORK_RECORDS, PENDING_ADD_MS, logEntry } from "./types.js";
import type {
  AckOutcome,
  AppendOutcome,
  AppendWrite,
  CommitOutcome,
  CommitWrite,
  DeliveryStore,
  DepartOutcome,
  DeviceGroups,
  DeviceInGroup,
  ForkOutcome,
  ForkRecord,
  ForkReport,
  GroupSnapshot,
  GroupStatus,
  IndexSettlement,
  Invitation,
  LogEntry,
  MemberRecord,
  Membership,
  NewGroup,
  StoredProposal,
  StretchAck,
  SweepOutcome,
  WinningCommit,
} from "./types.js";

interface GroupData {
  epoch: number;
  seq: number;
  /** Entries up to this seq are deleted. */
  base: number;
  roster: Map<number, MemberRecord>;
  leaves: Map<string, number>;
  memberships: Map<string, Membership[]>;
  /** `device#from` → acknowledged position in the device's stretch from that seq. */
  acks: Map<string, number>;
  /** Entries base+1 … seq. */
  log: LogEntry[];
  welcomes: Map<number, Uint8Array>;
  proposals: Map<string, StoredProposal>;
  winners: Map<number, WinningCommit>;
  /** Winners of epochs below this are forgotten. */
  winnersLow: number;
  forks: Map<number, ForkRecord>;
}

interface DeviceIndex {
  numbers: Map<string, number>;
  next: number;
  /** groupId → the adds of the device to it in flight (beginAdd without endAdd yet): token → when begun. */
  pending: Map<string, Map<string, number>>;
}

interface InvitationQueue {
  base: number;
  items: { invitation: Invitation; at: number }[];
}

/**
 * The embedded default store. Every write runs synchronously from its checks to its last change, with
 * no await in between, which makes it as atomic as the Redis store's Lua scripts within one process.
 */
export class MemoryDeliveryStore implements DeliveryStore {
  private readonly winnerEpochs: number;
  private readonly groups = new Map<string, GroupData>();
  private readonly deviceIndex = new Map<string, DeviceIndex>();
  private readonly cursors = new Map<string, Map<string, number>>();
  private readonly invitationQueues = new Map<string, InvitationQueue>();

  private readonly clock: () => number;

  /** `winnerEpochs`, `clock`: as the Redis store's options. */
  constructor(opts: { winnerEpochs?: number; clock?: () => number } = {}) {
    this.winnerEpochs = opts.winnerEpochs ?? DEFAULT_WINNER_EPOCHS;
    this.clock = opts.clock ?? Date.now;
  }

  async createGroup(g: NewGroup): Promise<boolean> {
    if (this.groups.has(g.groupId)) return false;
    this.groups.set(g.groupId, {
      epoch: 0,
      seq: 0,
      base: 0,
      roster: new Map([[0, g.creator]]),
      leaves: new Map([[g.creator.device, 0]]),
      memberships: new Map([[g.creator.device, [{ from: 0, until: null }]]]),
      acks: new Map(),
      log: [],
      welcomes: new Map(),
      proposals: new Map(),
      winners: new Map(),
      winnersLow: 0,
      forks: new Map(),
    });
    return true;
  }

  async loadGroup(groupId: string): Promise<GroupSnapshot | undefined> {
    const g = this.groups.get(groupId);
    if (!g) return undefined;
    return {
      groupId,
      epoch: g.epoch,
      seq: g.seq,
      roster: new Map(g.roster),
      proposals: new Map(g.proposals),
    };
  }

  async commit(groupId: string, w: CommitWrite): Promise<CommitOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    if (g.leaves.get(w.sender) !== w.senderLeaf) return { ok: false, reason: "not_a_member" };
    if (g.epoch !== w.expectedEpoch) {
      return {
        ok: false,
        reason: "wrong_epoch",
        epoch: g.epoch,
        winner: g.winners.get(w.expectedEpoch)?.hash ?? null,
      };
    }
    const seq = ++g.seq;
    const text = w.text ?? toBase64url(w.message);
    g.log.push(logEntry({ seq, epoch: w.expectedEpoch, sender: w.sender, at: w.at, text }));
    g.epoch = w.expectedEpoch + 1;
    g.winners.set(w.expectedEpoch, { hash: w.hash, seq, sender: w.sender });
    forgetWinners(g, this.winnerEpochs);
    g.proposals.clear();
    const changed: string[] = [];
    for (const leaf of w.removes) {
      const member = g.roster.get(leaf);
      if (!member) continue;
      changed.push(member.device);
      g.roster.delete(leaf);
      // A departed device's leaf: the device left already, and the group has forgotten its stretches.
      if (g.leaves.get(member.device) !== leaf) continue;
      g.leaves.delete(member.device);
      const last = g.memberships.get(member.device)?.at(-1);
      if (last && last.until === null) last.until = seq;
    }
    for (const { leaf, member } of w.adds) {
      changed.push(member.device);
      g.roster.set(leaf, member);
      g.leaves.set(member.device, leaf);
      const stretches = g.memberships.get(member.device) ?? [];
      stretches.push({ from: seq, until: null });
      g.memberships.set(member.device, stretches);
    }
    if (w.welcome) g.welcomes.set(seq, w.welcome);
    const event = groupEvent(
      groupId,
      seq,
      { epoch: w.expectedEpoch, sender: w.sender, at: w.at, text },
      changed,
    );
    return { ok: true, seq, epoch: g.epoch, event, announced: false };
  }

  async append(groupId: string, w: AppendWrite): Promise<AppendOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    const leaf = g.leaves.get(w.sender);
    if (leaf === undefined || (w.leaf !== undefined && leaf !== w.leaf)) {
      return { ok: false, reason: "not_a_member" };
    }
    if (w.kind === "proposal") {
      if (w.epoch !== g.epoch) {
        return {
          ok: false,
          reason: "wrong_epoch",
          epoch: g.epoch,
          winner: g.winners.get(w.epoch)?.hash ?? null,
        };
      }
      if (w.ref === undefined || g.proposals.has(w.ref)) return { ok: false, reason: "duplicate_proposal" };
      // SCR-19 in the same step as the write, as the Redis store does.
      if (g.proposals.size >= LIMITS.proposalsPerEpoch) return { ok: false, reason: "too_many_proposals" };
      g.proposals.set(w.ref, { message: w.message, senderLeaf: leaf });
    } else {
      if (w.epoch > g.epoch) return { ok: false, reason: "wrong_epoch", epoch: g.epoch, winner: null };
      if (w.epoch < g.epoch - w.window) return { ok: false, reason: "stale_epoch", epoch: g.epoch };
    }
    const seq = ++g.seq;
    const text = w.text ?? toBase64url(w.message);
    g.log.push(logEntry({ seq, epoch: w.epoch, sender: w.sender, at: w.at, text }));
    const event = groupEvent(groupId, seq, { epoch: w.epoch, sender: w.sender, at: w.at, text });
    return { ok: true, seq, epoch: g.epoch, event, announced: false };
  }

  async winningCommit(groupId: string, epoch: number): Promise<WinningCommit | null> {
    return this.groups.get(groupId)?.winners.get(epoch) ?? null;
  }

  async reportFork(groupId: string, r: ForkReport): Promise<ForkOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    if (!g.leaves.has(r.reporter)) return { ok: false, reason: "not_a_member" };
    const win = g.winners.get(r.epoch);
    if (!win || win.hash !== r.commitHash) {
      return { ok: false, reason: "unknown_commit" };
    }
    const existing = g.forks.get(r.epoch);
    if (existing) return { ok: true, fork: existing, created: false, event: undefined, announced: false };
    const seq = ++g.seq;
    const fork: ForkRecord = {
      seq,
      epoch: r.epoch,
      commitHash: win.hash,
      commitSeq: win.seq,
      sender: win.sender,
      reporter: r.reporter,
      reason: r.reason,
    };
    g.forks.set(r.epoch, fork);
    if (g.forks.size > FORK_RECORDS) {
      g.forks.delete(Math.min(...[...g.forks.keys()].filter((e) => e !== r.epoch)));
    }
    g.log.push(logEntry({ seq, epoch: g.epoch, sender: r.reporter, at: r.at, text: "", fork }));
    return {
      ok: true,
      fork,
      created: true,
      event: { kind: "group", groupId, seq, epoch: g.epoch, sender: r.reporter, at: r.at, notice: true },
      announced: false,
    };
  }

  async groupStatus(groupId: string): Promise<GroupStatus | undefined> {
    const g = this.groups.get(groupId);
    if (!g) return undefined;
    return {
      epoch: g.epoch,
      seq: g.seq,
      base: g.base,
      members: g.roster.size,
      forks: [...g.forks.values()].sort((a, b) => a.seq - b.seq),
    };
  }

  private indexOf(device: string): DeviceIndex {
    let index = this.deviceIndex.get(device);
    if (!index) {
      index = { numbers: new Map(), next: 0, pending: new Map() };
      this.deviceIndex.set(device, index);
    }
    return index;
  }

  async indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void> {
    const index = this.indexOf(device);
    for (const id of groupIds) if (!index.numbers.has(id)) index.numbers.set(id, ++index.next);
  }

  private markInFlight(index: DeviceIndex, groupId: string, token: string): void {
    const pending = index.pending.get(groupId) ?? new Map<string, number>();
    index.pending.set(groupId, pending);
    const now = this.clock();
    for (const [t, at] of pending) if (now - at >= PENDING_ADD_MS) pending.delete(t);
    pending.set(token, now);
  }

  async deviceGroups(device: string): Promise<DeviceGroups> {
    const index = this.deviceIndex.get(device);
    return { numbers: new Map(index?.numbers), next: index?.next ?? 0 };
  }

  async deviceGroupNumber(device: string, groupId: string): Promise<number | undefined> {
    return this.deviceIndex.get(device)?.numbers.get(groupId);
  }

  // Each of these runs from its check to its last change with no await: the group's memberships and the
  // device's index are read and written in one step, which the Redis store can only approach (redis.ts).
  async beginAdd(device: string, groupId: string, token: string, max: number) {
    const index = this.indexOf(device);
    const present = index.numbers.has(groupId);
    if (!present && index.numbers.size >= max) return "full" as const;
    if (!present) index.numbers.set(groupId, ++index.next);
    this.markInFlight(index, groupId, token);
    return present ? ("present" as const) : ("added" as const);
  }

  async endAdd(device: string, groupId: string, token: string): Promise<void> {
    const index = this.deviceIndex.get(device);
    const pending = index?.pending.get(groupId);
    if (!index || !pending) return;
    pending.delete(token);
    if (pending.size === 0) index.pending.delete(groupId);
  }

  async forgetDeviceGroup(device: string, groupId: string): Promise<IndexSettlement> {
    const index = this.deviceIndex.get(device);
    if (!index?.numbers.has(groupId)) {
      this.indexMember(device, groupId);
      return "absent";
    }
    const now = this.clock();
    const inFlight = [...(index.pending.get(groupId)?.values() ?? [])].some(
      (at) => now - at < PENDING_ADD_MS,
    );
    if (inFlight || this.groups.get(groupId)?.memberships.has(device)) return "kept";
    const prefix = `${index.numbers.get(groupId)!}.`;
    index.numbers.delete(groupId);
    index.pending.delete(groupId);
    const cursor = this.cursors.get(device);
    for (const stream of cursor?.keys() ?? []) if (stream.startsWith(prefix)) cursor!.delete(stream);
    return "deleted";
  }

  async indexIfMember(device: string, groupId: string): Promise<boolean> {
    return this.indexMember(device, groupId);
  }

  private indexMember(device: string, groupId: string): boolean {
    if (!this.groups.get(groupId)?.memberships.has(device)) return false;
    const index = this.indexOf(device);
    if (index.numbers.has(groupId)) return false;
    index.numbers.set(groupId, ++index.next);
    return true;
  }

  async deviceGroupCount(device: string): Promise<number> {
    return this.deviceIndex.get(device)?.numbers.size ?? 0;
  }

  async memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined> {
    const g = this.groups.get(groupId);
    const stretches = g?.memberships.get(device);
    if (!g || !stretches) return undefined;
    return { seq: g.seq, base: g.base, memberships: stretches.map((m) => ({ ...m })) };
  }

  async readLog(groupId: string, from: number, to: number): Promise<LogEntry[]> {
    const g = this.groups.get(groupId);
    if (!g) return [];
    const first = Math.max(from, g.base + 1);
    if (to < first) return [];
    return g.log.slice(first - g.base - 1, to - g.base);
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

  async dropCursorStreams(device: string, streams: readonly string[]): Promise<void> {
    const stored = this.cursors.get(device);
    for (const stream of streams) stored?.delete(stream);
  }

  async ackGroup(groupId: string, device: string, acks: readonly StretchAck[]): Promise<AckOutcome> {
    const g = this.groups.get(groupId);
    const stretches = g?.memberships.get(device);
    // As lua.ts ACK_GROUP: a stretch named that the device does not have (any more) is returned as gone.
    const unknown = acks.filter(({ from }) => !stretches?.some((m) => m.from === from)).map((a) => a.from);
    if (!g || !stretches) return { done: false, trimmed: 0, forgotten: unknown };
    for (const { from, position } of acks) {
      const key = `${device}#${from}`;
      if (!unknown.includes(from) && position > (g.acks.get(key) ?? -1)) g.acks.set(key, position);
    }
    // The first stretches read to their `removed` go (as lua.ts ACK_GROUP).
    let n = 0;
    while (n < stretches.length && isRead(g, device, stretches[n]!)) n++;
    const gone = stretches.slice(0, n);
    if (n > 0) forgetStretches(g, device, gone, stretches.slice(n));
    return {
      done: n === stretches.length,
      trimmed: this.trimRead(g),
      forgotten: [...unknown, ...gone.map((m) => m.from)],
    };
  }

  async depart(groupId: string, device: string): Promise<DepartOutcome> {
    const g = this.groups.get(groupId);
    if (!g) return { ok: false, reason: "unknown_group" };
    const leaf = g.leaves.get(device);
    if (leaf !== undefined) {
      g.leaves.delete(device);
      g.roster.set(leaf, { ...g.roster.get(leaf)!, departed: true });
    }
    const stretches = g.memberships.get(device);
    if (!stretches) return { ok: true, leaf, trimmed: 0, forgotten: [] };
    forgetStretches(g, device, stretches);
    return { ok: true, leaf, trimmed: this.trimRead(g), forgotten: stretches.map((m) => m.from) };
  }

  /** Retention by acknowledgement: deletes what every device with a stretch in the group has read. */
  private trimRead(g: GroupData): number {
    let floor = g.seq;
    for (const [d, s] of g.memberships) floor = unreadFloor(g, d, s, floor);
    const trimmed = trimTo(g, floor);
    if (trimmed > 0) forgetWinners(g, this.winnerEpochs);
    return trimmed;
  }

  async sweep(cutoff: number): Promise<SweepOutcome> {
    let entries = 0;
    let invitations = 0;
    for (const g of this.groups.values()) {
      let n = 0;
      while (n < g.log.length && g.log[n]!.at < cutoff) n++;
      const trimmed = trimTo(g, g.base + n);
      if (trimmed > 0) forgetWinners(g, this.winnerEpochs);
      entries += trimmed;
    }
    for (const q of this.invitationQueues.values()) {
      let n = 0;
      while (n < q.items.length && q.items[n]!.at < cutoff) n++;
      q.items.splice(0, n);
      q.base += n;
      invitations += n;
    }
    return { entries, invitations };
  }

  async queueInvitation(
    acct: string,
    invitation: Invitation,
    at: number,
    max = Number.MAX_SAFE_INTEGER,
  ): Promise<number | undefined> {
    const queue = this.invitationQueues.get(acct) ?? { base: 0, items: [] };
    if (queue.items.length >= max) return undefined;
    this.invitationQueues.set(acct, queue);
    queue.items.push({ invitation, at });
    return queue.base + queue.items.length;
  }

  async invitationCount(acct: string): Promise<number> {
    const queue = this.invitationQueues.get(acct);
    return queue ? queue.base + queue.items.length : 0;
  }

  async invitations(acct: string, after: number, max: number) {
    const queue = this.invitationQueues.get(acct);
    if (!queue || max <= 0) return [];
    const from = Math.max(after, queue.base);
    return queue.items
      .slice(from - queue.base, from - queue.base + max)
      .map(({ invitation }, i) => ({ seq: from + i + 1, invitation }));
  }

  async trimInvitations(acct: string, upTo: number): Promise<number> {
    const queue = this.invitationQueues.get(acct);
    if (!queue) return 0;
    const n = Math.min(Math.max(upTo - queue.base, 0), queue.items.length);
    queue.items.splice(0, n);
    queue.base += n;
    return n;
  }

  async ready(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}
}

/**
 * `floor`, lowered to the lowest position the device still has to read in these stretches (unread
 * positions count from just before its Welcome; a stretch read to its `removed` holds nothing back).
 */
function unreadFloor(g: GroupData, device: string, stretches: readonly Membership[], floor: number): number {
  for (const m of stretches) {
    const ack = Math.max(g.acks.get(`${device}#${m.from}`) ?? -1, m.from === 0 ? 0 : m.from - 1);
    if (!isRead(g, device, m)) floor = Math.min(floor, ack);
  }
  return floor;
}

/** Whether the device has read this stretch to its `removed` notice. */
function isRead(g: GroupData, device: string, m: Membership): boolean {
  return m.until !== null && (g.acks.get(`${device}#${m.from}`) ?? -1) >= m.until + 1;
}

/** The group forgets these stretches of a device and what it acknowledged in them; `rest` stay. */
function forgetStretches(
  g: GroupData,
  device: string,
  gone: readonly Membership[],
  rest: Membership[] = [],
): void {
  if (rest.length > 0) g.memberships.set(device, rest);
  else g.memberships.delete(device);
  for (const m of gone) g.acks.delete(`${device}#${m.from}`);
}

/** Deletes the log entries and Welcomes up to `floor`; returns how many entries went. */
function trimTo(g: GroupData, floor: number): number {
  const target = Math.min(floor, g.seq);
  if (target <= g.base) return 0;
  const n = target - g.base;
  g.log.splice(0, n);
  for (const seq of g.welcomes.keys()) if (seq <= target) g.welcomes.delete(seq);
  g.base = target;
  return n;
}

/**
 * As lua.ts FORGET_WINS: the winners of epochs before the latest `keep` whose commits have left the log
 * go, oldest first, at most 100 per step, and their fork records with them.
 */
function forgetWinners(g: GroupData, keep: number): void {
  const start = g.winnersLow;
  let low = start;
  while (low < g.epoch - keep && low - start < 100) {
    const win = g.winners.get(low);
    if (win) {
      if (win.seq > g.base) break;
      g.winners.delete(low);
      g.forks.delete(low);
    }
    low++;
  }
  g.winnersLow = low;
}
