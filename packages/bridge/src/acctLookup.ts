import { canonicalDomain, formatAcct, formatIdentity, parseAcct, type Acct } from "@mastodon-mls/protocol";
import { findMlsField, type ProfileField } from "./profileFields.js";
import type { ProfileProofIn } from "./profileProof.js";
import { TransportError, type TransportFailure } from "./httpExchange.js";
import type { HttpGet, HttpResponse } from "./safeHttp.js";

// DESIGN §3 "Looking up an acct", one lookup without caching (rules LK-1…LK-8 in docs/identity.md).
// The order of the checks is the order of the requests; each answer is checked before the next request.

export interface AccountState {
  suspended: boolean;
  /** `user@domain` (or the actor URL when the instance did not say) of the account moved to. */
  movedTo: string | null;
}

interface Base {
  /** Canonical `user@domain`. */
  acct: string;
  /** When the answer was obtained (ms, the resolver's clock). */
  checkedAt: number;
}

export type LookupResult =
  | (Base & {
      kind: "found";
      proof: ProfileProofIn;
      account: AccountState;
      /** Set when the instance is unreachable now and this is the last good answer (at most 24 h old). */
      lastGood?: { unreachableReason: string };
    })
  | (Base & { kind: "no-proof"; reason: string; account: AccountState })
  | (Base & { kind: "not-found"; gone: boolean; reason: string })
  | (Base & { kind: "unreachable"; failure: TransportFailure | "status" | "body"; reason: string })
  | (Base & { kind: "invalid"; rule: string; reason: string });

export interface LookupOptions {
  get: HttpGet;
  /** Where WebFinger for a domain is asked. Default `https://<domain>`. */
  resolveOrigin?: (domain: string) => string;
  now?: () => number;
  /**
   * LK-7's answers, shared by lookups (acctResolver keeps them as long as a lookup's answer, ST-2): an
   * instance's domain is the same for all its accounts, so a group of 500 members on a few instances asks
   * each instance once, not once per member.
   */
  instanceDomains?: InstanceDomains;
}

/** What `/api/v2/instance` said an API origin's domain is, remembered for a while. */
export interface InstanceDomains {
  get(apiOrigin: string): string | undefined;
  set(apiOrigin: string, domain: string): void;
}

export const defaultResolveOrigin = (domain: string): string => `https://${domain}`;

class Stop extends Error {
  constructor(readonly result: LookupResult) {
    super(result.kind);
  }
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

const ACTIVITY_TYPES = new Set([
  "application/activity+json",
  'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
]);

export async function lookupAcct(input: string, options: LookupOptions): Promise<LookupResult> {
  const parsed = parseAcct(input); // LK-1: throws invalid_acct for anything that is not a handle
  const acct = formatAcct(parsed);
  const checkedAt = (options.now ?? Date.now)();
  const base = { acct, checkedAt };
  try {
    return await lookupSteps(parsed, base, options);
  } catch (e) {
    if (e instanceof Stop) return e.result;
    if (e instanceof TransportError) {
      return { ...base, kind: "unreachable", failure: e.failure, reason: `${acct}'s instance: ${e.message}` };
    }
    throw e;
  }
}

async function lookupSteps(parsed: Acct, base: Base, o: LookupOptions): Promise<LookupResult> {
  const { acct } = base;
  const violated = (rule: string, reason: string) =>
    new Stop({ ...base, kind: "invalid", rule, reason: `${rule}: ${reason}` });
  const unreachable = (failure: "status" | "body", reason: string) =>
    new Stop({ ...base, kind: "unreachable", failure, reason });

  /** Statuses that answer the question (404, 410) end the lookup; any other failure is "unreachable". */
  const json = (res: HttpResponse, what: string): Json => {
    if (res.status === 404)
      throw new Stop({ ...base, kind: "not-found", gone: false, reason: `${what}: no such account` });
    if (res.status === 410) {
      throw new Stop({
        ...base,
        kind: "not-found",
        gone: true,
        reason: `${what}: the account was deleted or closed`,
      });
    }
    if (res.status !== 200) throw unreachable("status", `${what} answered HTTP ${res.status}`);
    try {
      const value: unknown = JSON.parse(new TextDecoder().decode(res.body));
      if (!isObject(value)) throw new Error("not an object");
      return value;
    } catch {
      throw unreachable("body", `${what} did not answer with a JSON object`);
    }
  };

  // LK-2: WebFinger on the acct's own domain.
  const identity = formatIdentity(parsed);
  const origin = (o.resolveOrigin ?? defaultResolveOrigin)(parsed.domain);
  const wfUrl = new URL("/.well-known/webfinger", origin);
  wfUrl.searchParams.set("resource", identity);
  const wf = json(await o.get(wfUrl.href, { accept: "application/jrd+json, application/json" }), "WebFinger");

  // LK-3: the subject is the acct asked for (user names compare without case, as Mastodon's do).
  const subject = wf.subject;
  let subjectAcct: string | undefined;
  try {
    subjectAcct =
      typeof subject === "string" && subject.startsWith("acct:") ? formatAcct(parseAcct(subject)) : undefined;
  } catch {
    subjectAcct = undefined;
  }
  if (subjectAcct !== acct)
    throw violated("LK-3", `WebFinger answered for ${String(subject)}, not acct:${acct}`);

  // LK-4: exactly one ActivityPub `self` link; its host is where the account's API lives.
  const links = Array.isArray(wf.links) ? wf.links.filter(isObject) : [];
  const selfLinks = links.filter(
    (l) => l.rel === "self" && typeof l.type === "string" && ACTIVITY_TYPES.has(l.type),
  );
  if (selfLinks.length !== 1 || typeof selfLinks[0]!.href !== "string") {
    throw violated("LK-4", `WebFinger has ${selfLinks.length} ActivityPub self links, not one`);
  }
  const selfHref = selfLinks[0]!.href;
  let apiOrigin: string;
  try {
    const selfUrl = new URL(selfHref);
    if (selfUrl.protocol !== "https:" && selfUrl.protocol !== "http:") throw new Error("scheme");
    apiOrigin = selfUrl.origin;
  } catch {
    throw violated("LK-4", "the self link is not an HTTP(S) URL");
  }

  // LK-5: the account, asked of its home server only, never through another server.
  const lookupUrl = new URL("/api/v1/accounts/lookup", apiOrigin);
  lookupUrl.searchParams.set("acct", parsed.user);
  const account = json(
    await o.get(lookupUrl.href, { accept: "application/json", sameOrigin: true }),
    "The account lookup",
  );

  // LK-6: a local account (no domain in `acct`), the one asked for, at the URI WebFinger named.
  if (
    typeof account.acct !== "string" ||
    account.acct.includes("@") ||
    account.acct.toLowerCase() !== parsed.user
  ) {
    throw violated(
      "LK-6",
      `the lookup answered with ${String(account.acct)}, not the local account ${parsed.user}`,
    );
  }
  if (account.uri !== selfHref)
    throw violated("LK-6", `the account's uri ${String(account.uri)} is not WebFinger's self link`);

  // LK-7: that server's domain is the acct's domain (LOCAL_DOMAIN, which may differ from the API host).
  let domain = o.instanceDomains?.get(apiOrigin);
  let reported = "unknown";
  if (domain === undefined) {
    const instance = json(
      await o.get(new URL("/api/v2/instance", apiOrigin).href, {
        accept: "application/json",
        sameOrigin: true,
      }),
      "The instance",
    );
    if (typeof instance.domain === "string") {
      // Any IDNA spelling of the acct's domain is that domain; what is no host name matches nothing.
      domain = canonicalDomain(instance.domain);
      if (domain !== undefined) o.instanceDomains?.set(apiOrigin, domain);
      else reported = JSON.stringify(instance.domain.slice(0, 100));
    }
  }
  if (domain !== parsed.domain) {
    throw violated("LK-7", `the instance at ${apiOrigin} is ${domain ?? reported}, not ${parsed.domain}`);
  }

  const state: AccountState = {
    suspended: account.suspended === true,
    movedTo: movedTo(account.moved, parsed.domain),
  };

  // LK-8: the one `MLS` field (PF-1…PF-5).
  const fields: ProfileField[] = (Array.isArray(account.fields) ? account.fields : [])
    .filter(isObject)
    .filter(
      (f): f is { name: string; value: string } => typeof f.name === "string" && typeof f.value === "string",
    )
    .map((f) => ({ name: f.name, value: f.value }));
  const found = findMlsField(fields);
  switch (found.kind) {
    case "proof":
      return { ...base, kind: "found", proof: found.proof, account: state };
    case "none":
      return {
        ...base,
        kind: "no-proof",
        account: state,
        reason: `${acct} has no MLS field in their profile`,
      };
    case "malformed":
      return {
        ...base,
        kind: "no-proof",
        account: state,
        reason: `${acct}'s MLS field is not a proof we understand`,
      };
    case "duplicate":
      throw violated("PF-5", `${acct}'s profile has ${found.count} fields named MLS`);
  }
}

/** A local target's `acct` has no domain: it is the looked-up account's. */
function movedTo(moved: unknown, domain: string): string | null {
  if (!isObject(moved)) return null;
  if (typeof moved.acct === "string")
    return moved.acct.includes("@") ? moved.acct : `${moved.acct}@${domain}`;
  return typeof moved.uri === "string" ? moved.uri : "another account";
}
