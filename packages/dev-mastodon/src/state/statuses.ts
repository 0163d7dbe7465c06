// Statuses and who may see them (StatusPolicy#show? without follows: nobody follows anybody here), the
// Idempotency-Key memory of PostStatusService (one hour, per account), and each account's conversations.
import type { Account, LocalAccount, Privacy } from "./accounts.js";
import type { Application } from "./oauth.js";

export interface Status {
  readonly id: string;
  readonly account: LocalAccount;
  readonly text: string;
  readonly spoilerText: string;
  readonly visibility: Privacy;
  readonly sensitive: boolean;
  readonly language: string | null;
  readonly inReplyTo: Status | null;
  readonly mentions: readonly Account[];
  readonly application: Application | null;
  readonly createdAt: Date;
}

export interface Conversation {
  readonly id: string;
  /** The other participants. */
  readonly accounts: readonly Account[];
  lastStatus: Status;
  unread: boolean;
}

const IDEMPOTENCY_TTL_MS = 60 * 60 * 1000;

export class StatusStore {
  private readonly statuses = new Map<string, Status>();
  private readonly idempotency = new Map<string, { statusId: string; expiresAt: number }>();
  private readonly conversations = new Map<string, Map<string, Conversation>>();

  constructor(private readonly nextId: () => string) {}

  add(status: Status): void {
    this.statuses.set(status.id, status);
    if (status.visibility === "direct") this.recordConversations(status);
  }

  find(id: string): Status | undefined {
    return this.statuses.get(id);
  }

  /** StatusPolicy#show? for the viewer (undefined when anonymous). */
  visibleTo(status: Status, viewer: LocalAccount | undefined): boolean {
    if (status.visibility === "public" || status.visibility === "unlisted") return true;
    if (viewer === undefined) return false;
    return status.account === viewer || status.mentions.includes(viewer);
  }

  rememberIdempotency(account: LocalAccount, key: string, statusId: string): void {
    this.idempotency.set(`${account.id}:${key}`, { statusId, expiresAt: Date.now() + IDEMPOTENCY_TTL_MS });
  }

  /** The status an earlier request with this key created, if it is under an hour old and still exists. */
  recall(account: LocalAccount, key: string): Status | undefined {
    const entry = this.idempotency.get(`${account.id}:${key}`);
    if (entry === undefined || entry.expiresAt < Date.now()) return undefined;
    return this.statuses.get(entry.statusId);
  }

  /** Statuses in which the account was mentioned, oldest first. */
  received(account: Account): Status[] {
    return [...this.statuses.values()].filter((s) => s.mentions.includes(account));
  }

  conversationsOf(account: LocalAccount): Conversation[] {
    return [...(this.conversations.get(account.id)?.values() ?? [])].sort((a, b) =>
      BigInt(a.lastStatus.id) < BigInt(b.lastStatus.id) ? 1 : -1,
    );
  }

  private recordConversations(status: Status): void {
    const participants = [status.account, ...status.mentions];
    for (const owner of participants) {
      if (owner.kind !== "local") continue;
      const others = participants.filter((p) => p !== owner);
      const key = others
        .map((a) => a.id)
        .sort()
        .join(",");
      const mine = this.conversations.get(owner.id) ?? new Map<string, Conversation>();
      const existing = mine.get(key);
      if (existing !== undefined) {
        existing.lastStatus = status;
        existing.unread = owner !== status.account;
      } else {
        mine.set(key, {
          id: this.nextId(),
          accounts: others,
          lastStatus: status,
          unread: owner !== status.account,
        });
      }
      this.conversations.set(owner.id, mine);
    }
  }
}
