// Everything one fake instance knows, and the names it gives things. LOCAL_DOMAIN (the `domain` of
// handles, `user@a.test`) and the web origin the API and pages are served from (WEB_DOMAIN) are
// distinct, as on a real instance that serves `a.test` handles from `social.a.test`.
import { AccountDirectory, type Account } from "./accounts.js";
import { IdGenerator } from "./ids.js";
import { OAuthStore } from "./oauth.js";
import { StatusStore, type Status } from "./statuses.js";

export interface InstanceConfig {
  /** LOCAL_DOMAIN, lower-case ASCII. */
  readonly domain: string;
  readonly title: string;
  readonly version: string;
  readonly vapidKey: string;
}

export class InstanceState {
  readonly ids = new IdGenerator();
  readonly accounts = new AccountDirectory(this.ids);
  readonly oauth = new OAuthStore(this.ids);
  readonly statuses = new StatusStore(() => this.ids.next());
  /** DISALLOW_UNAUTHENTICATED_API_ACCESS, inverted. */
  unauthenticatedApi = true;
  private origin: string | undefined;

  constructor(readonly config: InstanceConfig) {}

  /** Set once the server listens (or from `publicUrl`): the origin every rendered URL uses. */
  setWebOrigin(origin: string): void {
    this.origin = origin.replace(/\/+$/, "");
  }

  get webOrigin(): string {
    if (this.origin === undefined) throw new Error("the web origin is known only once the server listens");
    return this.origin;
  }

  /** WEB_DOMAIN: the host of the web origin, with its port when it has one. */
  get webHost(): string {
    return new URL(this.webOrigin).host;
  }

  /** TagManager#local_domain?: LOCAL_DOMAIN, case-insensitive, a trailing slash tolerated. */
  isLocalDomain(domain: string | null | undefined): boolean {
    if (domain === null || domain === undefined) return true;
    return domain.trim().replace(/\/$/, "").toLowerCase() === this.config.domain;
  }

  /** TagManager#web_domain?: the host serving the web (with or without its port). */
  isWebDomain(domain: string): boolean {
    const d = domain.trim().replace(/\/$/, "").toLowerCase();
    const url = new URL(this.webOrigin);
    return d === url.host.toLowerCase() || d === url.hostname.toLowerCase();
  }

  /** ActivityPub::TagManager#uri_for: the actor id, the WebFinger `self` link. */
  accountUri(account: Account): string {
    return account.kind === "remote" ? account.uri : `${this.webOrigin}/users/${account.username}`;
  }

  /** ActivityPub::TagManager#url_for: the profile page. */
  accountUrl(account: Account): string {
    return account.kind === "remote" ? account.url : `${this.webOrigin}/@${account.username}`;
  }

  /** Account#pretty_acct. */
  acct(account: Account): string {
    return account.kind === "remote" ? `${account.username}@${account.domain}` : account.username;
  }

  statusUri(status: Status): string {
    return `${this.webOrigin}/users/${status.account.username}/statuses/${status.id}`;
  }

  statusUrl(status: Status): string {
    return `${this.webOrigin}/@${status.account.username}/${status.id}`;
  }
}
