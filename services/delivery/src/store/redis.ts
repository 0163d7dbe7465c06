import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { StoreUnavailableError, redisReady, type Redis } from "@mastodon-mls/service-kit";
import { ADVANCE_CURSOR, APPEND, COMMIT, CREATE_GROUP, INDEX_DEVICE_GROUPS } from "./lua.js";
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

/**
 * Key layout (README): every key starts with the prefix and is hash-tagged by the one group, device or
 * account it belongs to, so each atomic step touches a single Redis Cluster slot.
 *
 *   <p>{g:<groupId>}:meta      hash   epoch, seq, created
 *   <p>{g:<groupId>}:roster    hash   leaf → {"d": device, "a": acct}
 *   <p>{g:<groupId>}:leaves    hash   device → leaf
 *   <p>{g:<groupId>}:mship     hash   device → "from:until,from:" (membership stretches)
 *   <p>{g:<groupId>}:log       list   entry seq n at index n-1: {"e": epoch, "d": device, "t": ms, "m": b64url}
 *   <p>{g:<groupId>}:welcome   hash   seq of the adding commit → Welcome (b64url)
 *   <p>{g:<groupId>}:props     hash   ProposalRef → {"l": leaf, "m": b64url}, this epoch only
 *   <p>{g:<groupId>}:wins      hash   epoch → b64url SHA-256 of the commit that ended it
 *   <p>{d:<deviceId>}:groups   hash   groupId → the group's number in this device's cursors
 *   <p>{d:<deviceId>}:next     string counter for those numbers
 *   <p>{d:<deviceId>}:cursor   hash   cursor stream → acknowledged position
 *   <p>{a:<acct>}:inv          list   invitation seq n at index n-1 (JSON)
 */
export class RedisDeliveryStore implements DeliveryStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private group(groupId: string) {
    const base = `${this.prefix}{g:${groupId}}:`;
    return {
      meta: `${base}meta`,
      roster: `${base}roster`,
      leaves: `${base}leaves`,
      mship: `${base}mship`,
      log: `${base}log`,
      welcome: `${base}welcome`,
      props: `${base}props`,
      wins: `${base}wins`,
    };
  }

  private device(device: string) {
    const base = `${this.prefix}{d:${device}}:`;
    return { groups: `${base}groups`, next: `${base}next`, cursor: `${base}cursor` };
  }

  private account(acct: string) {
    return { inv: `${this.prefix}{a:${acct}}:inv` };
  }

  async createGroup(g: NewGroup): Promise<boolean> {
    const k = this.group(g.groupId);
    const created = await CREATE_GROUP.run(
      this.redis,
      [k.meta, k.roster, k.leaves, k.mship],
      [g.at, g.creator.device, memberJson(g.creator)],
    );
    return created === 1;
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
    const args: (string | number)[] = [
      String(w.expectedEpoch),
      entryJson(w.expectedEpoch, w.sender, w.at, w.message),
      w.hash,
      w.welcome ? toBase64url(w.welcome) : "",
      w.removes.length,
      ...w.removes,
      w.adds.length,
      ...w.adds.flatMap((a) => [a.leaf, a.member.device, memberJson(a.member)]),
    ];
    const reply = (await COMMIT.run(
      this.redis,
      [k.meta, k.roster, k.leaves, k.mship, k.log, k.welcome, k.props, k.wins],
      args,
    )) as [string, ...(string | number)[]];
    switch (reply[0]) {
      case "ok":
        return { ok: true, seq: Number(reply[1]), epoch: Number(reply[2]) };
      case "wrong_epoch":
        return {
          ok: false,
          reason: "wrong_epoch",
          epoch: Number(reply[1]),
          winner: String(reply[2]) || null,
        };
      default:
        return { ok: false, reason: "unknown_group" };
    }
  }

  async append(groupId: string, w: AppendWrite): Promise<AppendOutcome> {
    const k = this.group(groupId);
    const reply = (await APPEND.run(
      this.redis,
      [k.meta, k.leaves, k.log, k.props, k.wins],
      [
        w.kind,
        String(w.epoch),
        w.sender,
        String(w.leaf),
        entryJson(w.epoch, w.sender, w.at, w.message),
        w.ref ?? "",
        JSON.stringify({ l: w.leaf, m: toBase64url(w.message) }),
        w.window,
      ],
    )) as [string, ...(string | number)[]];
    switch (reply[0]) {
      case "ok":
        return { ok: true, seq: Number(reply[1]), epoch: Number(reply[2]) };
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
        return { ok: false, reason: reply[0] };
      default:
        return { ok: false, reason: "unknown_group" };
    }
  }

  async winningCommit(groupId: string, epoch: number): Promise<string | null> {
    return this.redis.hget(this.group(groupId).wins, String(epoch));
  }

  async indexDeviceGroups(device: string, groupIds: readonly string[]): Promise<void> {
    if (groupIds.length === 0) return;
    const k = this.device(device);
    await INDEX_DEVICE_GROUPS.run(this.redis, [k.groups, k.next], groupIds);
  }

  async deviceGroups(device: string): Promise<ReadonlyMap<string, number>> {
    const all = await this.redis.hgetall(this.device(device).groups);
    return new Map(Object.entries(all).map(([id, n]) => [id, Number(n)]));
  }

  async memberships(groupId: string, device: string): Promise<DeviceInGroup | undefined> {
    const k = this.group(groupId);
    const replies = await this.redis.multi().hget(k.meta, "seq").hget(k.mship, device).exec();
    const [seq, stretches] = results<string | null>(replies, 2);
    if (!seq || !stretches) return undefined;
    return { seq: Number(seq), memberships: parseStretches(stretches) };
  }

  async readLog(groupId: string, from: number, to: number): Promise<LogEntry[]> {
    const start = Math.max(from, 1);
    if (to < start) return [];
    const raw = await this.redis.lrange(this.group(groupId).log, start - 1, to - 1);
    return raw.map((json, i) => {
      const e = JSON.parse(json) as { e: number; d: string; t: number; m: string };
      return { seq: start + i, epoch: e.e, sender: e.d, at: e.t, message: fromBase64url(e.m) };
    });
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

  async queueInvitation(acct: string, invitation: Invitation): Promise<number> {
    return this.redis.rpush(this.account(acct).inv, JSON.stringify(invitation));
  }

  async invitationCount(acct: string): Promise<number> {
    return this.redis.llen(this.account(acct).inv);
  }

  async invitations(acct: string, after: number, max: number) {
    if (max <= 0) return [];
    const raw = await this.redis.lrange(this.account(acct).inv, after, after + max - 1);
    return raw.map((json, i) => ({ seq: after + i + 1, invitation: JSON.parse(json) as Invitation }));
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
  const m = JSON.parse(json) as { d: string; a: string };
  return { device: m.d, acct: m.a };
}

function entryJson(epoch: number, device: string, at: number, message: Uint8Array): string {
  return JSON.stringify({ e: epoch, d: device, t: at, m: toBase64url(message) });
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
