// Doorkeeper's records as Mastodon configures it: applications, authorization codes (10 minutes, single
// use, optionally PKCE S256) and access tokens that never expire but can be revoked. A revoked token is
// kept, so using it answers "The access token was revoked" rather than "is invalid", as Doorkeeper does.
import { IdGenerator, secretToken } from "./ids.js";
import type { LocalAccount } from "./accounts.js";

/** Every scope Mastodon's Doorkeeper configuration accepts. */
export const SCOPES: ReadonlySet<string> = new Set([
  "read",
  "write",
  "follow",
  "push",
  "profile",
  "read:accounts",
  "read:blocks",
  "read:bookmarks",
  "read:favourites",
  "read:filters",
  "read:follows",
  "read:lists",
  "read:mutes",
  "read:notifications",
  "read:search",
  "read:statuses",
  "write:accounts",
  "write:blocks",
  "write:bookmarks",
  "write:conversations",
  "write:favourites",
  "write:filters",
  "write:follows",
  "write:lists",
  "write:media",
  "write:mutes",
  "write:notifications",
  "write:reports",
  "write:statuses",
  "admin:read",
  "admin:read:accounts",
  "admin:read:reports",
  "admin:read:domain_allows",
  "admin:read:domain_blocks",
  "admin:read:ip_blocks",
  "admin:read:email_domain_blocks",
  "admin:read:canonical_email_blocks",
  "admin:write",
  "admin:write:accounts",
  "admin:write:reports",
  "admin:write:domain_allows",
  "admin:write:domain_blocks",
  "admin:write:ip_blocks",
  "admin:write:email_domain_blocks",
  "admin:write:canonical_email_blocks",
]);
export const DEFAULT_SCOPES: readonly string[] = ["read"];
export const OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob";
const GRANT_LIFETIME_MS = 10 * 60 * 1000;

/** Doorkeeper's scope strings: whitespace-separated, order kept, duplicates dropped. */
export function parseScopes(text: string): string[] {
  return [...new Set(text.split(/\s+/).filter((s) => s !== ""))];
}

export function allKnownScopes(scopes: readonly string[]): boolean {
  return scopes.every((s) => SCOPES.has(s));
}

export interface Application {
  readonly id: string;
  readonly name: string;
  readonly website: string | null;
  readonly redirectUris: readonly string[];
  readonly scopes: readonly string[];
  readonly clientId: string;
  readonly clientSecret: string;
  readonly createdAt: Date;
}

export interface Grant {
  readonly code: string;
  readonly application: Application;
  readonly account: LocalAccount;
  readonly redirectUri: string;
  readonly scopes: readonly string[];
  readonly expiresAt: number;
  readonly codeChallenge: string | null;
  used: boolean;
}

export interface AccessToken {
  readonly token: string;
  readonly application: Application;
  /** The resource owner; null for a client_credentials (app-only) token. */
  readonly account: LocalAccount | null;
  readonly scopes: readonly string[];
  readonly createdAt: Date;
  revokedAt: Date | null;
}

export class OAuthStore {
  private readonly apps = new Map<string, Application>();
  private readonly grants = new Map<string, Grant>();
  private readonly tokens = new Map<string, AccessToken>();

  constructor(private readonly ids: IdGenerator) {}

  createApplication(input: {
    name: string;
    website: string | null;
    redirectUris: readonly string[];
    scopes: readonly string[];
  }): Application {
    const app: Application = {
      id: this.ids.next(),
      ...input,
      clientId: secretToken(),
      clientSecret: secretToken(),
      createdAt: new Date(),
    };
    this.apps.set(app.clientId, app);
    return app;
  }

  findApplication(clientId: string): Application | undefined {
    return this.apps.get(clientId);
  }

  createGrant(input: Omit<Grant, "code" | "expiresAt" | "used">): Grant {
    const grant: Grant = {
      ...input,
      code: secretToken(),
      expiresAt: Date.now() + GRANT_LIFETIME_MS,
      used: false,
    };
    this.grants.set(grant.code, grant);
    return grant;
  }

  /** A grant that can still be exchanged, or undefined. */
  findUsableGrant(code: string): Grant | undefined {
    const grant = this.grants.get(code);
    if (grant === undefined || grant.used || grant.expiresAt < Date.now()) return undefined;
    return grant;
  }

  issueToken(application: Application, account: LocalAccount | null, scopes: readonly string[]): AccessToken {
    const token: AccessToken = {
      token: secretToken(),
      application,
      account,
      scopes: [...scopes],
      createdAt: new Date(),
      revokedAt: null,
    };
    this.tokens.set(token.token, token);
    return token;
  }

  /** Doorkeeper's AccessToken.by_token: revoked tokens are found too. */
  findToken(token: string): AccessToken | undefined {
    return this.tokens.get(token);
  }

  /** What the ON DELETE CASCADE from users to oauth_access_tokens does when an account is deleted. */
  deleteTokensOf(account: LocalAccount): void {
    for (const [key, token] of this.tokens) if (token.account === account) this.tokens.delete(key);
    for (const [key, grant] of this.grants) if (grant.account === account) this.grants.delete(key);
  }
}
