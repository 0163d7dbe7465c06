// createDevMastodon: one fake instance on a real HTTP port, plus the handles tests need to arrange what
// a real instance's admins and users would (accounts, tokens without the browser step, suspensions,
// moves, deletions, faults). Each call is independent: several instances with different domains can
// run in one process.
import { generateKeyPairSync } from "node:crypto";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { installUnauthenticatedGate } from "./http/auth.js";
import { BODY_LIMIT, installRawBodies } from "./http/bodies.js";
import { installCors } from "./http/cors.js";
import { installErrorHandling } from "./http/errors.js";
import { Faults, installFaults, type FaultMode, type FaultOptions } from "./http/faults.js";
import {
  installRateLimit,
  MASTODON_RATE_LIMITS,
  RateLimiter,
  type RateLimitOptions,
} from "./http/rateLimit.js";
import { installRequestLog } from "./http/requestLog.js";
import { markVerified } from "./model/fields.js";
import { resolveOptions, type DevMastodonOptions } from "./options.js";
import { registerAccountRoutes } from "./routes/accounts.js";
import { registerAppRoutes } from "./routes/apps.js";
import { registerCredentialRoutes } from "./routes/credentials.js";
import { registerInstanceRoutes } from "./routes/instance.js";
import { registerOAuthRoutes } from "./routes/oauth.js";
import { registerStatusRoutes } from "./routes/statuses.js";
import { registerWebfingerRoutes } from "./routes/webfinger.js";
import type { Account, LocalAccount, NewLocalAccount, NewRemoteAccount } from "./state/accounts.js";
import { InstanceState } from "./state/instance.js";
import { allKnownScopes, OOB_REDIRECT_URI, parseScopes, SCOPES, type Application } from "./state/oauth.js";

/** Where an account can be found, as a test needs it. */
export interface AccountInfo {
  readonly id: string;
  readonly username: string;
  /** Canonical handle, `user@domain` (LOCAL_DOMAIN for local accounts). */
  readonly acct: string;
  /** ActivityPub id: the WebFinger `self` link and the REST `uri`. */
  readonly uri: string;
  /** Profile page: the REST `url`. */
  readonly url: string;
}

/** A status as an account received it (direct or not), for assertions. */
export interface ReceivedStatus {
  readonly id: string;
  /** Canonical handle of the author. */
  readonly from: string;
  /** The text as written. */
  readonly text: string;
  readonly visibility: "public" | "unlisted" | "private" | "direct";
  /** Canonical handles of everyone it mentions. */
  readonly mentions: readonly string[];
  readonly createdAt: Date;
}

export interface IssueTokenInput {
  /** The resource owner: a local username. */
  readonly username: string;
  /** Space-separated or a list, e.g. "read write" or ["profile", "write:accounts"]. */
  readonly scopes: string | readonly string[];
  /** Name of the application the token belongs to; created on first use. Default "dev-mastodon". */
  readonly app?: string;
}

export interface DevMastodon {
  /** Origin of the instance's API and pages as it names itself (publicUrl, or where it listens). */
  readonly url: string;
  /** Where the server actually listens, e.g. http://127.0.0.1:41234. */
  readonly listenUrl: string;
  /** LOCAL_DOMAIN. */
  readonly domain: string;
  /** Stops the server; requests left hanging by a fault are dropped. */
  close(): Promise<void>;
  createAccount(input: NewLocalAccount): AccountInfo;
  /** Makes the instance know a remote account, as if it had federated with it. */
  addRemoteAccount(input: NewRemoteAccount): AccountInfo;
  account(username: string): AccountInfo;
  /** An access token as the authorization code flow would give, without the browser step. */
  issueToken(input: IssueTokenInput): string;
  /** A client_credentials token: an application, no user. */
  issueAppToken(input: { scopes: string | readonly string[]; app?: string }): string;
  revokeToken(token: string): void;
  /**
   * A moderator's suspension: the REST API says `suspended: true` and the user's tokens get 403.
   * WebFinger still answers while the suspension can be undone (Mastodon's 30 days); with
   * `permanent: true` it is past that point (data purged) and WebFinger answers 410.
   */
  suspend(username: string, options?: { permanent?: boolean }): void;
  unsuspend(username: string): void;
  /**
   * The account moves to `target`: a local username, `user@domain`, or an actor or profile URL
   * (`https://b.test/users/bob`, `https://b.test/@bob`). A remote target becomes a known account.
   */
  move(username: string, target: string): void;
  /** The user deletes the account: tokens gone, username reserved, WebFinger 410, REST `suspended`. */
  deleteAccount(username: string): void;
  /** Sets `verified_at` on a field, as Mastodon's rel=me link verification would. */
  markFieldVerified(username: string, fieldName: string, at?: Date): void;
  /** False behaves like DISALLOW_UNAUTHENTICATED_API_ACCESS=true. */
  setUnauthenticatedApi(allowed: boolean): void;
  fault(mode: FaultMode, options?: FaultOptions): void;
  /** Requests the "hang" fault is holding right now. */
  readonly heldRequests: number;
  /** Resolves once the "hang" fault holds at least `count` requests. */
  untilHeld(count?: number): Promise<void>;
  /** Replaces the throttles and forgets the counts so far. */
  setRateLimits(limits: Partial<RateLimitOptions>): void;
  /** Statuses that mention the account, oldest first. */
  receivedStatuses(username: string): ReceivedStatus[];
}

// A syntactically real Web Push key (uncompressed P-256 point), as apps and the instance report it.
function vapidKey(): string {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const der = publicKey.export({ type: "spki", format: "der" });
  return der.subarray(der.length - 65).toString("base64url");
}

function buildApp(logger: FastifyBaseLogger | undefined, level: string): FastifyInstance {
  const common = {
    bodyLimit: BODY_LIMIT,
    // Hanging requests (fault "hang") must not keep close() waiting.
    forceCloseConnections: true,
    // Replaced by installRequestLog, which keeps tokens out of the logged URL.
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
  } as const;
  return logger !== undefined
    ? Fastify({ ...common, loggerInstance: logger })
    : Fastify({ ...common, logger: { level } });
}

function toScopes(scopes: string | readonly string[]): string[] {
  const list = typeof scopes === "string" ? parseScopes(scopes) : [...new Set(scopes)];
  if (list.length === 0 || !allKnownScopes(list)) {
    throw new Error(`unknown or empty scopes: ${list.join(" ")}`);
  }
  return list;
}

export async function createDevMastodon(options: DevMastodonOptions): Promise<DevMastodon> {
  const o = resolveOptions(options);
  const state = new InstanceState({
    domain: o.domain,
    title: o.title,
    version: o.version,
    vapidKey: vapidKey(),
  });
  state.unauthenticatedApi = o.unauthenticatedApi;
  for (const seed of options.accounts ?? []) state.accounts.createLocal(seed);

  const faults = new Faults();
  if (options.fault !== undefined) faults.set(options.fault);
  const limiter = new RateLimiter({ ...MASTODON_RATE_LIMITS, ...o.rateLimits });

  const app = buildApp(options.logger, o.logLevel);
  installRawBodies(app);
  installRequestLog(app);
  installErrorHandling(app);
  installFaults(app, faults);
  installCors(app);
  installRateLimit(app, state, limiter);
  installUnauthenticatedGate(app, state);
  const ctx = { app, state };
  registerInstanceRoutes(ctx);
  registerWebfingerRoutes(ctx);
  registerAppRoutes(ctx);
  registerOAuthRoutes(ctx);
  registerCredentialRoutes(ctx);
  registerAccountRoutes(ctx);
  registerStatusRoutes(ctx);

  try {
    await app.listen({ host: o.host, port: o.port });
  } catch (error) {
    await app.close();
    throw error;
  }
  const address = app.server.address();
  if (address === null || typeof address === "string") throw new Error("dev-mastodon: no TCP address");
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const listenUrl = `http://${host}:${address.port}`;
  state.setWebOrigin(o.publicUrl ?? listenUrl);

  const info = (account: Account): AccountInfo => ({
    id: account.id,
    username: account.username,
    acct:
      account.kind === "local" ? `${account.username}@${o.domain}` : `${account.username}@${account.domain}`,
    uri: state.accountUri(account),
    url: state.accountUrl(account),
  });

  // The helpers' applications may ask for anything, so that a token's scopes are only what the test says.
  const apps = new Map<string, Application>();
  const appFor = (name: string): Application => {
    let app = apps.get(name);
    if (app === undefined) {
      app = state.oauth.createApplication({
        name,
        website: null,
        redirectUris: [OOB_REDIRECT_URI],
        scopes: [...SCOPES],
      });
      apps.set(name, app);
    }
    return app;
  };

  const usable = (username: string): LocalAccount => {
    const account = state.accounts.requireLocal(username);
    if (account.deleted) throw new Error(`account ${username} is deleted`);
    return account;
  };

  const moveTarget = (target: string): Account => {
    if (/^https?:\/\//i.test(target)) {
      const url = new URL(target);
      const name = /^\/(?:users\/|@)([^/]+)\/?$/.exec(url.pathname)?.[1];
      if (name === undefined) throw new Error(`cannot tell the account of ${target}`);
      if (url.origin === state.webOrigin) return usable(name);
      const isActor = url.pathname.startsWith("/users/");
      return state.accounts.addRemote({
        username: name,
        domain: url.host,
        ...(isActor ? { uri: target } : { url: target }),
      });
    }
    const [username = "", domain] = target.replace(/^@/, "").split("@");
    if (domain === undefined || state.isLocalDomain(domain)) return usable(username);
    return state.accounts.addRemote({ username, domain });
  };

  return {
    url: state.webOrigin,
    listenUrl,
    domain: o.domain,
    async close() {
      faults.close();
      await app.close();
    },
    createAccount: (input) => info(state.accounts.createLocal(input)),
    addRemoteAccount: (input) => info(state.accounts.addRemote(input)),
    account: (username) => info(state.accounts.requireLocal(username)),
    issueToken({ username, scopes, app: appName = "dev-mastodon" }) {
      const account = usable(username);
      const list = toScopes(scopes);
      return state.oauth.issueToken(appFor(appName), account, list).token;
    },
    issueAppToken({ scopes, app: appName = "dev-mastodon" }) {
      const list = toScopes(scopes);
      return state.oauth.issueToken(appFor(appName), null, list).token;
    },
    revokeToken(token) {
      const record = state.oauth.findToken(token);
      if (record === undefined) throw new Error("unknown token");
      record.revokedAt ??= new Date();
    },
    suspend(username, suspendOptions = {}) {
      const account = usable(username);
      account.suspendedAt ??= new Date();
      account.deletionRequested = suspendOptions.permanent !== true;
    },
    unsuspend(username) {
      const account = usable(username);
      account.suspendedAt = null;
      account.deletionRequested = false;
    },
    move(username, target) {
      const account = usable(username);
      const to = moveTarget(target);
      if (to === account) throw new Error("an account cannot move to itself");
      account.movedTo = to;
    },
    deleteAccount(username) {
      const account = usable(username);
      // DeleteAccountService keeps the row to reserve the username and empties the profile.
      Object.assign(account, {
        deleted: true,
        suspendedAt: account.suspendedAt ?? new Date(),
        deletionRequested: false,
        displayName: "",
        note: "",
        fields: [],
      });
      state.oauth.deleteTokensOf(account);
    },
    markFieldVerified(username, fieldName, at = new Date()) {
      if (!markVerified(usable(username).fields, fieldName, at)) {
        throw new Error(`${username} has no field named ${JSON.stringify(fieldName)}`);
      }
    },
    setUnauthenticatedApi(allowed) {
      state.unauthenticatedApi = allowed;
    },
    fault: (mode, faultOptions) => faults.set(mode, faultOptions),
    get heldRequests() {
      return faults.held;
    },
    untilHeld: (count = 1) => faults.untilHeld(count),
    setRateLimits(limits) {
      limiter.options = { ...MASTODON_RATE_LIMITS, ...limits };
      limiter.reset();
    },
    receivedStatuses(username) {
      const account = state.accounts.requireLocal(username);
      const canonical = (a: Account) => info(a).acct;
      return state.statuses.received(account).map((s) => ({
        id: s.id,
        from: canonical(s.account),
        text: s.text,
        visibility: s.visibility,
        mentions: s.mentions.map(canonical),
        createdAt: s.createdAt,
      }));
    },
  };
}
