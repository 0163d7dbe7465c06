import { createHash } from "node:crypto";
import { z } from "zod";
import { ProtocolError, formatAcct, parseAcct } from "@mastodon-mls/protocol";
import type { InstanceDomain } from "./instanceDomain.js";
import type { MastodonApi } from "./mastodonApi.js";

/** The local account a bearer token belongs to. */
export interface TokenAccount {
  /** `user@domain`, canonical. */
  acct: string;
  /** Mastodon's account id. */
  id: string;
}

export interface TokenVerifierOptions {
  /** How long a successful verification is trusted (DESIGN §5: briefly). */
  cacheSeconds?: number;
  maxCacheEntries?: number;
  /** Milliseconds, for tests. */
  now?: () => number;
}

const CredentialAccount = z.object({
  id: z.string().min(1).max(64),
  username: z.string().min(1).max(64),
  acct: z.string().max(400),
});
const DoorkeeperError = z.object({ error: z.string() });

interface CacheEntry {
  account: TokenAccount;
  until: number;
}

/**
 * Checks a Mastodon bearer token with `verify_credentials` on the served instance. Successes are cached
 * for a minute under SHA-256 of the token, never the token; concurrent checks of one token share a call.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<TokenAccount>>();
  private readonly cacheMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(
    private readonly api: MastodonApi,
    private readonly domain: InstanceDomain,
    opts: TokenVerifierOptions = {},
  ) {
    this.cacheMs = (opts.cacheSeconds ?? 60) * 1000;
    this.maxEntries = opts.maxCacheEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  async verify(token: string): Promise<TokenAccount> {
    const key = createHash("sha256").update(token).digest("base64url");
    const cached = this.cache.get(key);
    if (cached && cached.until > this.now()) return cached.account;
    if (cached) this.cache.delete(key);
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.ask(token).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const account = await pending;
    this.remember(key, account);
    return account;
  }

  private async ask(token: string): Promise<TokenAccount> {
    const [answer, domain] = await Promise.all([
      this.api.get("/api/v1/accounts/verify_credentials", token),
      this.domain.get(),
    ]);
    if (answer.status === 200) return accountOf(answer.json, domain);
    throw refusal(answer.status, answer.json);
  }

  private remember(key: string, account: TokenAccount): void {
    if (this.cache.size >= this.maxEntries) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    this.cache.set(key, { account, until: this.now() + this.cacheMs });
  }
}

function accountOf(json: unknown, domain: string): TokenAccount {
  const parsed = CredentialAccount.safeParse(json);
  // verify_credentials always describes a local account: its acct has no domain part.
  if (!parsed.success || parsed.data.acct.includes("@")) {
    throw new ProtocolError("mastodon_unavailable", "The Mastodon instance gave an unexpected answer.");
  }
  try {
    return { acct: formatAcct(parseAcct(`${parsed.data.username}@${domain}`)), id: parsed.data.id };
  } catch {
    throw new ProtocolError("mastodon_unavailable", "The Mastodon instance gave an unexpected username.");
  }
}

/**
 * Doorkeeper answers token problems with a JSON `{error}`. Anything else — a 5xx, a proxy's HTML page, a
 * status we do not know — says nothing about the token, so it is the instance that is unavailable.
 */
function refusal(status: number, json: unknown): ProtocolError {
  const doorkeeper = DoorkeeperError.safeParse(json);
  if (!doorkeeper.success) {
    return new ProtocolError("mastodon_unavailable", `The Mastodon instance answered ${status}.`);
  }
  switch (status) {
    case 401:
      return new ProtocolError("invalid_token");
    case 403:
      return /scope/i.test(doorkeeper.data.error)
        ? new ProtocolError("insufficient_scope", "The token needs the profile, read or read:accounts scope.")
        : new ProtocolError(
            "forbidden",
            "Mastodon refused this account (unconfirmed, disabled or suspended).",
          );
    case 422:
      return new ProtocolError(
        "invalid_token",
        "This is an app token; a user token (authorization_code grant) is needed.",
      );
    default:
      return new ProtocolError("mastodon_unavailable", `The Mastodon instance answered ${status}.`);
  }
}
