// The instance's accounts: its own (local) ones, and remote ones it already knows, as a real instance
// knows the accounts it federated with. Lookups by username are case-insensitive, as Mastodon's are.
import type { IdGenerator } from "./ids.js";
import type { UploadedFile } from "../http/params.js";

/** A value strong parameters let through into the `fields` JSON column. */
export type FieldScalar = string | number | boolean | null | UploadedFile;

/** One row of the `fields` column, stored exactly as submitted (Mastodon sanitises when reading). */
export interface StoredField {
  name?: FieldScalar;
  value?: FieldScalar;
  verified_at?: string;
}

export type Privacy = "public" | "unlisted" | "private" | "direct";

interface AccountBase {
  readonly id: string;
  readonly username: string;
  displayName: string;
  note: string;
  fields: StoredField[];
  readonly createdAt: Date;
  locked: boolean;
  bot: boolean;
  discoverable: boolean;
  indexable: boolean;
  hideCollections: boolean;
  statusesCount: number;
  lastStatusAt: Date | null;
  movedTo: Account | null;
  suspendedAt: Date | null;
}

export interface LocalAccount extends AccountBase {
  readonly kind: "local";
  /** Suspended by a moderator and still within the 30 days in which it can be undone. */
  deletionRequested: boolean;
  /** Deleted: the user and its tokens are gone, the username stays reserved. */
  deleted: boolean;
  settings: { privacy: Privacy; sensitive: boolean; language: string | null };
}

export interface RemoteAccount extends AccountBase {
  readonly kind: "remote";
  readonly domain: string;
  readonly uri: string;
  readonly url: string;
}

export type Account = LocalAccount | RemoteAccount;

/** Mastodon's rule for local usernames (remote ones may also contain dots and dashes). */
const LOCAL_USERNAME = /^[a-z0-9_]+$/i;
const REMOTE_USERNAME = /^[a-z0-9_]+(?:[.-]+[a-z0-9_]+)*$/i;
export const USERNAME_LENGTH_LIMIT = 30;

export interface NewLocalAccount {
  username: string;
  displayName?: string;
  note?: string;
  fields?: ReadonlyArray<{ name: string; value: string }>;
  locked?: boolean;
  bot?: boolean;
  discoverable?: boolean;
}

export interface NewRemoteAccount {
  username: string;
  domain: string;
  /** ActivityPub id; defaults to `https://<domain>/users/<username>`. */
  uri?: string;
  /** Profile page; defaults to `https://<domain>/@<username>`. */
  url?: string;
  displayName?: string;
  note?: string;
  fields?: ReadonlyArray<{ name: string; value: string }>;
}

function base(id: string, username: string, input: { displayName?: string; note?: string }): AccountBase {
  return {
    id,
    username,
    displayName: input.displayName ?? "",
    note: input.note ?? "",
    fields: [],
    createdAt: new Date(),
    locked: false,
    bot: false,
    discoverable: false,
    indexable: false,
    hideCollections: false,
    statusesCount: 0,
    lastStatusAt: null,
    movedTo: null,
    suspendedAt: null,
  };
}

export class AccountDirectory {
  private readonly byId = new Map<string, Account>();
  private readonly local = new Map<string, LocalAccount>();
  private readonly remote = new Map<string, RemoteAccount>();

  constructor(private readonly ids: IdGenerator) {}

  createLocal(input: NewLocalAccount): LocalAccount {
    const { username } = input;
    if (!LOCAL_USERNAME.test(username) || username.length > USERNAME_LENGTH_LIMIT) {
      throw new Error(`invalid local username ${JSON.stringify(username)}: [a-z0-9_]{1,30} only`);
    }
    if (this.local.has(username.toLowerCase())) throw new Error(`username ${username} is taken`);
    const account: LocalAccount = {
      ...base(this.ids.next(), username, input),
      kind: "local",
      fields: (input.fields ?? []).map((f) => ({ name: f.name, value: f.value })),
      locked: input.locked ?? false,
      bot: input.bot ?? false,
      discoverable: input.discoverable ?? false,
      deletionRequested: false,
      deleted: false,
      settings: { privacy: "public", sensitive: false, language: null },
    };
    this.local.set(username.toLowerCase(), account);
    this.byId.set(account.id, account);
    return account;
  }

  /** Records a remote account as if it had federated with this instance; returns the known one if any. */
  addRemote(input: NewRemoteAccount): RemoteAccount {
    const domain = input.domain.toLowerCase();
    if (!REMOTE_USERNAME.test(input.username))
      throw new Error(`invalid username ${JSON.stringify(input.username)}`);
    const key = `${input.username.toLowerCase()}@${domain}`;
    const known = this.remote.get(key);
    if (known !== undefined) return known;
    const account: RemoteAccount = {
      ...base(this.ids.next(), input.username, input),
      kind: "remote",
      domain,
      fields: (input.fields ?? []).map((f) => ({ name: f.name, value: f.value })),
      uri: input.uri ?? `https://${domain}/users/${input.username}`,
      url: input.url ?? `https://${domain}/@${input.username}`,
    };
    this.remote.set(key, account);
    this.byId.set(account.id, account);
    return account;
  }

  findById(id: string): Account | undefined {
    return this.byId.get(id);
  }

  findLocal(username: string): LocalAccount | undefined {
    return this.local.get(username.toLowerCase());
  }

  /** Account.find_remote: `domain` null means this instance. */
  find(username: string, domain: string | null): Account | undefined {
    if (domain === null) return this.findLocal(username);
    return this.remote.get(`${username.toLowerCase()}@${domain.toLowerCase()}`);
  }

  /** For the test helpers: a local account by username, or a clear error. */
  requireLocal(username: string): LocalAccount {
    const account = this.findLocal(username);
    if (account === undefined) throw new Error(`no local account ${JSON.stringify(username)}`);
    return account;
  }

  locals(): LocalAccount[] {
    return [...this.local.values()];
  }
}

/** Mastodon's `suspended?`. */
export function isSuspended(account: Account): boolean {
  return account.suspendedAt !== null;
}

/**
 * User#functional?: can use the API. Suspended (even temporarily), deleted and moved accounts cannot;
 * Mastodon answers them 403 "Your login is currently disabled".
 */
export function isFunctional(account: LocalAccount): boolean {
  return !account.deleted && account.suspendedAt === null && account.movedTo === null;
}
