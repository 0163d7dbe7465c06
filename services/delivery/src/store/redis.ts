import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { StoreUnavailableError, redisReady, type Redis } from "@mastodon-mls/service-kit";
import { channelsOf } from "../channels.js";
import { groupTopic, topicsOf, type GroupEvent } from "../notifier.js";
import { eventTemplate, groupEvent } from "./events.js";
import { DEFAULT_WINNER_EPOCHS, PENDING_ADD_MS, logEntry } from "./types.js";
import {
  ACK_GROUP,
  ADVANCE_CURSOR,
  APPEND,
  BEGIN_ADD,
  COMMIT,
  CREATE_GROUP,
  DEPART,
  END_ADD,
  INDEX_DEVICE_GROUPS,
  QUEUE_INVITATION,
  READ_INVITATIONS,
  READ_LOG,
  REPORT_FORK,
  SETTLE_INDEX,
  SWEEP_GROUP,
  SWEEP_INVITATIONS,
  TRIM_INVITATIONS,
} from "./lua.js";
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

/** What a Lua script answers: a status word, then its values. */
type ScriptReply = [string, ...(string | number)[]];

export interface RedisStoreOptions {
  /** The winners of this many latest epochs are kept even after their commits left the log (lua.ts). */
  winnerEpochs?: number;
  /**
   * Publish each new log entry's event (to the RedisNotifier's shard channels under the same prefix) in
   * the script that appends it. Outcomes then say `announced: true` and the caller publishes nothing.
   */
  announce?: boolean;
  /**
   * The clock of adds in flight (PENDING_ADD_MS), for tests. By default the scripts read Redis's own
   * clock (TIME), the one clock every replica shares.
   */
  clock?: () => number;
}

/**
 * Key layout (README): every key starts with the prefix and is hash-tagged by the one group, device or
 * account it belongs to, so each atomic step touches a single Redis Cluster slot.
 *
 *   <p>{g:<groupId>}:meta      hash   epoch, seq, base (retention: entries up to it are gone), created,
 *                                     wlow (winners of epochs below it are forgotten)
 *   <p>{g:<groupId>}:roster    hash   leaf → {"d": device, "a": acct}, with "x": 1 once the device departed
 *   <p>{g:<groupId>}:leaves    hash   device → leaf
 *   <p>{g:<groupId>}:mship     hash   device → "from:until,from:" (membership stretches)
 *   <p>{g:<groupId>}:acks      hash   "device#from" → acknowledged position in the stretch from that seq
 *   <p>{g:<groupId>}:log       list   entry seq n at index n-base-1: {"t": ms, "e": epoch, "d": device, "m": b64url}
 *   <p>{g:<groupId>}:welcome   hash   seq of the adding commit → Welcome (b64url)
 *   <p>{g:<groupId>}:props     hash   ProposalRef → {"l": leaf, "m": b64url}, this epoch only
 *   <p>{g:<groupId>}:wins      hash   epoch → "<b64url SHA-256> <seq> <device>" of the commit that ended it,
 *                                     while that commit is in the log or among the last winnerEpochs
 *   <p>{g:<groupId>}:forks     hash   epoch → fork record (JSON), while its winner is kept; FORK_RECORDS
 *                                     at most (the newest epochs')
 *   <p>{d:<deviceId>}:groups   hash   groupId → the group's number in this device's cursors
 *   <p>{d:<deviceId>}:next     string counter for those numbers
 *   <p>{d:<deviceId>}:adds     hash   "p:<g>" adds of the device to group g in flight ("token@ms …"), "v:<g>" their version (lua.ts)
 *   <p>{d:<deviceId>}:cursor   hash   cursor stream → acknowledged position
 *   <p>{a:<acct>}:inv          list   invitations after invbase, in order (JSON, starting with "t")
 *   <p>{a:<acct>}:invbase      string invitations deleted so far
 *   <p>retention               zset   "g:<id>" / "a:<acct>" → ms of its oldest item (the sweeper's index)
 */
export class RedisDeliveryStore implements DeliveryStore {
  private readonly announce: boolean;
  private readonly index: string;
  private readonly winnerEpochs: number;
  private readonly clock: (() => number) | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    opts: RedisStoreOptions = {},
  ) {
    this.announce = opts.announce ?? false;
    this.winnerEpochs = opts.winnerEpochs ?? DEFAULT_WINNER_EPOCHS;
    this.index = `${prefix}retention`;
    this.clock = opts.clock;
  }

  private group(groupId: string) {
    const base = `${this.prefix}{g:${groupId}}:`;
    return {
      meta: `${base}meta`,
      roster: `${base}roster`,
      leaves: `${base}leaves`,
      mship: `${base}mship`,
      acks: `${base}acks`,
      log: `${base}log`,
      welcome: `${base}welcome`,
      props: `${base}props`,
      wins: `${base}wins`,
      forks: `${base}forks`,
    };
  }

  private device(device: string) {
    const base = `${this.prefix}{d:${device}}:`;
    return {
      groups: `${base}groups`,
      next: `${base}next`,
      cursor: `${base}cursor`,
      adds: `${base}adds`,
    };
  }

  private account(acct: string) {
    const base = `${this.prefix}{a:${acct}}:`;
    return { inv: `${base}inv`, base: `${base}invbase` };
  }

  /** `head, tail, channel…` for a script to publish `event` (or one empty argument: publish nothing). */
  private announcement(event: GroupEvent): string[] {
    if (!this.announce) return [""];
    return [...eventTemplate(event), ...channelsOf(this.prefix, topicsOf(event))];
  }

  async createGroup(g: NewGroup): Promise<boolean> {
    const k = this.group(g.groupId);
    const created = await CREATE_GROUP.run(
      this.redis,
      [k.meta, k.roster, k.leaves, k.mship],
      [g.at, g.creator.device, memberJson(g.creator)],
    );
    if (created !== 1) return false;
    await this.redis.zadd(this.index, "NX", g.at, `g:${g.groupId}`);
    return true;
  }

  async loadGroup(groupId: string): Promise<GroupSnapshot | undefined> {
    const k = this.group(groupId);
    // One MULTI, so the roster and proposals belong to the epoch read with them.
    const replies = await this.redis.multi().hgetall(k.meta).hgetall(k.roster).hgetall(k.props).exec();
    const [meta = {}, roster = {}, props = {}] = results<Record<string, string>>(replies, 3);
    if (meta.epoch === undefined || meta.seq === undefined) return undefined;
    const members = new Map<number, MemberRecord>();
    for (const [leaf, json] of Object.entries(roster)) members.set(Number(leaf), parseMember(json));
    const proposals = new Map<string, StoredProposal>();
    for (const [ref, json] of Object.entries(props)) {
      const p = JSON.parse(json) as { l: number; m: string };
      proposals.set(ref, { senderLeaf: p.l, message: fromBase64url(p.m) });
    }
    return { groupId, epoch: Number(meta.epoch), seq: Number(meta.seq), roster: members, proposals };
  }

  async commit(groupId: string, w: CommitWrite): Promise<CommitOutcome> {
    const k = this.group(groupId);
    const text = w.text ?? toBase64url(w.message);
    // The snapshot the commit was screened against has this roster: the epoch compare-and-set below
    // fails if any commit changed it since.
    const changed = w.adds.map((a) => a.member.device);
    const template = groupEvent(groupId, 0, { epoch: w.expectedEpoch, sender: w.sender, at: w.at, text }, [
      ...(w.removedDevices ?? []),
      ...changed,
    ]);
    const args: (string | number)[] = [
      String(w.expectedEpoch),
      entryJson(w.at, w.expectedEpoch, w.sender, text),
      w.hash,
      w.welcome ? toBase64url(w.welcome) : "",
      w.sender,
      this.winnerEpochs,
      String(w.senderLeaf),
      w.removes.length,
      ...w.removes,
      w.adds.length,
      ...w.adds.flatMap((a) => [a.leaf, a.member.device, memberJson(a.member)]),
      ...this.announcement(template),
    ];
    const reply = (await COMMIT.run(
      this.redis,
      [k.meta, k.roster, k.leaves, k.mship, k.log, k.welcome, k.props, k.wins, k.forks],
      args,
    )) as ScriptReply;
    // The commit script answers ok, wrong_epoch, not_a_member or unknown_group only.
    return this.writeOutcome(reply, template) as CommitOutcome;
  }

  async append(groupId: string, w: AppendWrite): Promise<AppendOutcome> {
    const k = this.group(groupId);
    const text = w.text ?? toBase64url(w.message);
    const template = groupEvent(groupId, 0, { epoch: w.epoch, sender: w.sender, at: w.at, text });
    // The script puts the message into both the entry and the announcement: it is sent once.
    const announcement: string[] = this.announce
      ? [
          eventTemplate({ ...template, message: undefined })[1].slice(0, -1),
          template.message === undefined ? "" : "1",
          ...channelsOf(this.prefix, topicsOf(template)),
        ]
      : ["", ""];
    const reply = (await APPEND.run(
      this.redis,
      [k.meta, k.leaves, k.log, k.props, k.wins],
      [
        w.kind,
        String(w.epoch),
        JSON.stringify(w.sender),
        w.leaf === undefined ? "" : String(w.leaf),
        w.at,
        JSON.stringify(text),
        w.ref ?? "",
        w.window,
        ...announcement,
      ],
    )) as ScriptReply;
    return this.writeOutcome(reply, template);
  }

  /** The answer of the scripts that write to a group's log (COMMIT, APPEND). */
  private writeOutcome(reply: ScriptReply, template: GroupEvent): AppendOutcome {
    switch (reply[0]) {
      case "ok": {
        const seq = Number(reply[1]);
        return {
          ok: true,
          seq,
          epoch: Number(reply[2]),
          event: { ...template, seq },
          announced: this.announce,
        };
      }
      case "wrong_epoch":
        return {
          ok: false,
          reason: "wrong_epoch",
          epoch: Number(reply[1]),
          winner: String(reply[2]) || null,
        };
      case "stale_epoch":
        return { ok: false, reason: "stale_epoch", epoch: Number(reply[1]) };
      case "not_a_member":
      case "duplicate_proposal":
      case "too_many_proposals":
        return { ok: false, reason: reply[0] };
      default:
        return { ok: false, reason: "unknown_group" };
    }
  }

  async winningCommit(groupId: string, epoch: number): Promise<WinningCommit | null> {
    const win = await this.redis.hget(this.group(groupId).wins, String(epoch));
    if (win === null) return null;
    const [hash = "", seq = "0", sender = ""] = win.split(" ");
    return { hash, seq: Number(seq), sender };
  }

  async reportFork(groupId: string, r: ForkReport): Promise<ForkOutcome> {
    const k = this.group(groupId);
    const channels = this.announce ? channelsOf(this.prefix, [groupTopic(groupId)]) : [];
    const reply = (await REPORT_FORK.run(
      this.redis,
      [k.meta, k.leaves, k.wins, k.forks, k.log],
      [r.reporter, String(r.epoch), r.commitHash, r.reason, r.at, groupId, ...channels],
    )) as [string, string?];
    switch (reply[0]) {
      case "ok":
      case "exists": {
        const fork = JSON.parse(reply[1]!) as ForkRecord;
        const created = reply[0] === "ok";
        return {
          ok: true,
          fork,
          created,
          event: created
            ? {
                kind: "group",
                groupId,
                seq: fork.seq,
                epoch: r.epoch,
                sender: r.reporter,
                at: r.at,
                notice: true,
              }
            : undefined,
          announced: this.announce,
        };
      }
      case "not_a_member":
      case "unknown_commit":
        return { ok: false, reason: reply[0] };
      default:
        return { ok: false, reason: "unknown_group" };
    }
  }

  async groupStatus(groupId: string): Promise<GroupStatus | undefined> {
    const k = this.group(groupId);
    const replies = await this.redis
      .multi()
      .hmget(k.meta, "epoch", "seq", "base")
      .hlen(k.roster)
      .hvals(k.forks)
      .exec();
    const [meta, members, forks] = results<unknown>(replies, 3) as [(string | null)[], number, string[]];
    if (meta[0] === null || meta[0] === undefined) return undefined;
    return {
      epoch: Number(meta[0]),
      seq: Number(meta[1]),
      base: Number(meta[2] ?? 0),
      members,
      forks: forks.map((f) => JSON.parse(f) as ForkRecord).sort((a, b) => a.seq - b.seq),
    };
  }

  async indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void> {
    if (groupIds.length === 0) return;
    const k = this.device(device);
    await INDEX_DEVICE_GROUPS.run(this.redis, [k.groups, k.next], groupIds);
  }

  async deviceGroups(device: string): Promise<DeviceGroups> {
    const k = this.device(device);
    const replies = await this.redis.multi().hgetall(k.groups).get(k.next).exec();
    const [all, next] = results<unknown>(replies, 2) as [Record<string, string>, string | null];
    return {
      numbers: new Map(Object.entries(all).map(([id, n]) => [id, Number(n)])),
      next: Number(next ?? 0),
    };
  }

  async deviceGroupNumber(device: string, groupId: string): Promise<number | undefined> {
    const n = await this.redis.hget(this.device(device).groups, groupId);
    return n === null ? undefined : Number(n);
  }

  async beginAdd(device: string, groupId: string, token: string, max: number) {
    const k = this.device(device);
    const reply = (await BEGIN_ADD.run(
      this.redis,
      [k.groups, k.next, k.adds],
      [groupId, token, this.clock?.() ?? "", PENDING_ADD_MS, max],
    )) as number;
    return reply === 1 ? ("added" as const) : reply === 0 ? ("present" as const) : ("full" as const);
  }

  async endAdd(device: string, groupId: string, token: string): Promise<void> {
    await END_ADD.run(this.redis, [this.device(device).adds], [groupId, token]);
  }

  /**
   * The memberships are in the group's hash slot, the index in the device's: no one script can check one
   * and change the other. So the entry and its add version are read first, the memberships next, and the
   * entry goes only if it is still the one read, the version has not moved and no add is in flight. A
   * commit that adds the device after the memberships were read began its add before that: it was in
   * flight when the script runs, or ended and moved the version, or began after the first read and
   * moved it (or made the entry anew).
   */
  async forgetDeviceGroup(device: string, groupId: string): Promise<IndexSettlement> {
    const k = this.device(device);
    const replies = await this.redis.multi().hget(k.groups, groupId).hget(k.adds, `v:${groupId}`).exec();
    const [number, version] = results<unknown>(replies, 2) as [string | null, string | null];
    if (number === null) {
      // No entry: a commit that added the device may still need one (indexIfMember after it, too).
      await this.indexIfMember(device, groupId);
      return "absent";
    }
    const member = await this.redis.hexists(this.group(groupId).mship, device);
    await this.beforeSettle?.(device, groupId);
    return (await SETTLE_INDEX.run(
      this.redis,
      [k.groups, k.adds, k.cursor],
      [groupId, number, version ?? "", member, this.clock?.() ?? "", PENDING_ADD_MS],
    )) as IndexSettlement;
  }

  /** Tests only: runs between the memberships read and the index change of a settle. */
  beforeSettle: ((device: string, groupId: string) => Promise<void>) | undefined;

  async indexIfMember(device: string, groupId: string): Promise<boolean> {
    if ((await this.redis.hexists(this.group(groupId).mship, device)) === 0) return false;
    const k = this.device(device);
    return ((await INDEX_DEVICE_GROUPS.run(this.redis, [k.groups, k.next], [groupId])) as number) > 0;
  }

  async deviceGroupCount(device: string): Promise<number> {
    return this.redis.hlen(this.device(device).groups);
  }

  async memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined> {
    const k = this.group(groupId);
    const replies = await this.redis.multi().hmget(k.meta, "seq", "base").hget(k.mship, device).exec();
    const [meta, stretches] = results<unknown>(replies, 2) as [(string | null)[], string | null];
    if (!meta[0] || !stretches) return undefined;
    return { seq: Number(meta[0]), base: Number(meta[1] ?? 0), memberships: parseStretches(stretches) };
  }

  async readLog(groupId: string, from: number, to: number): Promise<LogEntry[]> {
    const k = this.group(groupId);
    const reply = (await READ_LOG.run(this.redis, [k.meta, k.log], [from, to])) as [number, ...string[]];
    const [base, ...raw] = reply;
    const first = Math.max(from, base + 1);
    return raw.map((json, i) => parseEntry(first + i, json));
  }

  async welcome(groupId: string, seq: number): Promise<Uint8Array | undefined> {
    const b64 = await this.redis.hget(this.group(groupId).welcome, String(seq));
    return b64 === null ? undefined : fromBase64url(b64);
  }

  async cursor(device: string): Promise<ReadonlyMap<string, number>> {
    const all = await this.redis.hgetall(this.device(device).cursor);
    return new Map(Object.entries(all).map(([stream, pos]) => [stream, Number(pos)]));
  }

  async advanceCursor(device: string, positions: ReadonlyMap<string, number>): Promise<void> {
    if (positions.size === 0) return;
    const args = [...positions].flatMap(([stream, pos]) => [stream, pos]);
    await ADVANCE_CURSOR.run(this.redis, [this.device(device).cursor], args);
  }
  async dropCursorStreams(device: string, streams: readonly string[]): Promise<void> {
    if (streams.length > 0) await this.redis.hdel(this.device(device).cursor, ...streams);
  }

  async ackGroup(groupId: string, device: string, acks: readonly StretchAck[]): Promise<AckOutcome> {
    const k = this.group(groupId);
    const reply = (await ACK_GROUP.run(
      this.redis,
      [k.meta, k.mship, k.acks, k.log, k.welcome, k.wins, k.forks],
      [device, this.winnerEpochs, ...acks.flatMap((a) => [a.from, a.position])],
    )) as [number, number, string, string];
    const [done, trimmed, oldest, gone] = reply;
    if (trimmed > 0 && oldest !== "") await this.redis.zadd(this.index, "XX", oldest, `g:${groupId}`);
    return { done: done === 1, trimmed, forgotten: froms(gone) };
  }

  async depart(groupId: string, device: string): Promise<DepartOutcome> {
    const k = this.group(groupId);
    const reply = (await DEPART.run(
      this.redis,
      [k.meta, k.mship, k.acks, k.log, k.welcome, k.wins, k.forks, k.roster, k.leaves],
      [device, this.winnerEpochs],
    )) as ScriptReply;
    if (reply[0] !== "ok") return { ok: false, reason: "unknown_group" };
    const [, leaf, trimmed, oldest, gone] = reply as [string, string, number, string, string];
    if (trimmed > 0 && oldest !== "") await this.redis.zadd(this.index, "XX", oldest, `g:${groupId}`);
    return { ok: true, leaf: leaf === "" ? undefined : Number(leaf), trimmed, forgotten: froms(gone) };
  }

  async sweep(cutoff: number, now: number, max: number): Promise<SweepOutcome> {
    const out: SweepOutcome = { entries: 0, invitations: 0 };
    const due = await this.redis.zrangebyscore(this.index, "-inf", `(${cutoff}`, "LIMIT", 0, max);
    for (const member of due) {
      const id = member.slice(2);
      let reply: [number, string];
      if (member.startsWith("g:")) {
        const k = this.group(id);
        reply = (await SWEEP_GROUP.run(
          this.redis,
          [k.meta, k.log, k.welcome, k.wins, k.forks],
          [cutoff, max, this.winnerEpochs],
        )) as [number, string];
        if (reply[0] < 0) {
          await this.redis.zrem(this.index, member);
          continue;
        }
        out.entries += reply[0];
      } else {
        const k = this.account(id);
        reply = (await SWEEP_INVITATIONS.run(this.redis, [k.inv, k.base], [cutoff, max])) as [number, string];
        out.invitations += reply[0];
      }
      // Never removed while the group or account exists, so a concurrent first write cannot be lost:
      // an empty one is looked at again one retention period from now.
      await this.redis.zadd(this.index, "XX", reply[1] === "" ? now : reply[1], member);
    }
    return out;
  }

  async queueInvitation(
    acct: string,
    invitation: Invitation,
    at: number,
    max = Number.MAX_SAFE_INTEGER,
  ): Promise<number | undefined> {
    const k = this.account(acct);
    const seq = (await QUEUE_INVITATION.run(
      this.redis,
      [k.inv, k.base],
      [JSON.stringify({ t: at, ...invitation }), max],
    )) as number;
    if (seq === 0) return undefined;
    await this.redis.zadd(this.index, "NX", at, `a:${acct}`);
    return seq;
  }

  async invitationCount(acct: string): Promise<number> {
    const k = this.account(acct);
    const replies = await this.redis.multi().llen(k.inv).get(k.base).exec();
    const [length, base] = results<unknown>(replies, 2) as [number, string | null];
    return Number(base ?? 0) + length;
  }

  async invitations(acct: string, after: number, max: number) {
    if (max <= 0) return [];
    const k = this.account(acct);
    const reply = (await READ_INVITATIONS.run(this.redis, [k.inv, k.base], [after, max])) as [
      number,
      ...string[],
    ];
    const [from, ...raw] = reply;
    return raw.map((json, i) => {
      const { t: _t, ...invitation } = JSON.parse(json) as Invitation & { t: number };
      return { seq: from + i + 1, invitation };
    });
  }

  async trimInvitations(acct: string, upTo: number): Promise<number> {
    const k = this.account(acct);
    const [trimmed, oldest] = (await TRIM_INVITATIONS.run(this.redis, [k.inv, k.base], [upTo])) as [
      number,
      string,
    ];
    if (trimmed > 0 && oldest !== "") await this.redis.zadd(this.index, "XX", oldest, `a:${acct}`);
    return trimmed;
  }

  async ready(): Promise<boolean> {
    return redisReady(this.redis);
  }

  /** The connection belongs to the service context, which closes it last. */
  async close(): Promise<void> {}
}

function memberJson(m: MemberRecord): string {
  return JSON.stringify({ d: m.device, a: m.acct });
}

function parseMember(json: string): MemberRecord {
  const m = JSON.parse(json) as { d: string; a: string; x?: 1 };
  return m.x === 1 ? { device: m.d, acct: m.a, departed: true } : { device: m.d, acct: m.a };
}

/** `t` first: the retention scripts read it by pattern. */
function entryJson(at: number, epoch: number, device: string, text: string): string {
  return `{"t":${at},"e":${epoch},"d":${JSON.stringify(device)},"m":${JSON.stringify(text)}}`;
}

function parseEntry(seq: number, json: string): LogEntry {
  const e = JSON.parse(json) as { t: number; e: number; d: string; m: string; f?: ForkRecord };
  return logEntry({ seq, epoch: e.e, sender: e.d, at: e.t, text: e.m, ...(e.f ? { fork: e.f } : {}) });
}

function parseStretches(text: string): Membership[] {
  return text.split(",").map((s) => {
    const [from, until] = s.split(":");
    return { from: Number(from), until: until === undefined || until === "" ? null : Number(until) };
  });
}

/** The replies of a MULTI, or the first error in them. */
function results<T>(replies: [Error | null, unknown][] | null, n: number): T[] {
  if (!replies || replies.length !== n) throw new StoreUnavailableError(new Error("transaction aborted"));
  return replies.map(([err, value]) => {
    if (err) throw err;
    return value as T;
  });
}

/** "f,f,…" → the froms; "" → none. */
function froms(text: string): number[] {
  return text === "" ? [] : text.split(",").map(Number);
}
