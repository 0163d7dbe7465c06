import { canonicalAcct } from "@mastodon-mls/protocol";
import { lookupAcct, type InstanceDomains, type LookupResult } from "./acctLookup.js";
import { createSafeHttpGet, type HttpGet, type TransportOptions } from "./safeHttp.js";

// The lookup as clients and services use it: one request in flight per acct, answers cached, an instance's
// domain (LK-7) asked once per API origin while answers are, and the last good answer kept while an
// instance is down (rules ST-1…ST-5 in docs/identity.md).

export interface AcctResolverOptions extends TransportOptions {
  /** Where WebFinger for a domain is asked. Default `https://<domain>`; tests map domains to local servers. */
  resolveOrigin?: (domain: string) => string;
  /** Replaces the safe transport entirely (tests). */
  get?: HttpGet;
  /** Milliseconds. Default Date.now. */
  now?: () => number;
  successTtlMs?: number;
  failureTtlMs?: number;
  lastGoodMs?: number;
  /** Accounts remembered at most; the oldest entry goes first. */
  maxEntries?: number;
}

export interface AcctResolver {
  lookup(acct: string): Promise<LookupResult>;
  /**
   * Drops what is cached for an acct (not the last good answer), e.g. after its owner changed devices. A
   * lookup in flight goes on for those who asked, but its answer is not kept; the next lookup asks anew.
   */
  forget(acct: string): void;
}

export const SUCCESS_TTL_MS = 10 * 60_000;
export const FAILURE_TTL_MS = 60_000;
export const LAST_GOOD_MS = 24 * 3600_000;

interface Entry {
  result: LookupResult;
  until: number;
}

/** ST-2: answers from the instance are kept 10 minutes; failures and refusals 1 minute. */
function isSuccess(r: LookupResult): boolean {
  return r.kind === "found" || r.kind === "no-proof";
}

export function createAcctResolver(options: AcctResolverOptions = {}): AcctResolver {
  const get = options.get ?? createSafeHttpGet(options);
  const now = options.now ?? Date.now;
  const successTtl = options.successTtlMs ?? SUCCESS_TTL_MS;
  const failureTtl = options.failureTtlMs ?? FAILURE_TTL_MS;
  const lastGoodMs = options.lastGoodMs ?? LAST_GOOD_MS;
  const maxEntries = options.maxEntries ?? 10_000;
  const cache = new Map<string, Entry>();
  const lastGood = new Map<string, LookupResult & { kind: "found" }>();
  const inFlight = new Map<string, Promise<LookupResult>>();
  /** acct → the request in flight now; `forget` drops it, and its answer is then not kept. */
  const tickets = new Map<string, object>();
  const domains = new Map<string, { domain: string; until: number }>();
  const instanceDomains: InstanceDomains = {
    get(apiOrigin) {
      const known = domains.get(apiOrigin);
      return known !== undefined && known.until > now() ? known.domain : undefined;
    },
    set(apiOrigin, domain) {
      remember(domains, apiOrigin, { domain, until: now() + successTtl });
    },
  };

  const remember = <V>(map: Map<string, V>, key: string, value: V) => {
    map.delete(key);
    map.set(key, value);
    if (map.size > maxEntries) map.delete(map.keys().next().value!);
  };

  async function fresh(acct: string, ticket: object): Promise<LookupResult> {
    const result = await lookupAcct(acct, {
      get,
      now,
      resolveOrigin: options.resolveOrigin,
      instanceDomains,
    });
    // Forgotten while in flight (an answer asked before the change that made someone forget it): it is
    // handed to those who asked (with the last good answer standing in, as ST-3 says), never kept.
    const current = tickets.get(acct) === ticket;
    const t = now();
    const until = t + (isSuccess(result) ? successTtl : failureTtl);
    if (result.kind === "found") {
      if (current) remember(lastGood, acct, result);
    } else if (result.kind === "unreachable") {
      // ST-3: while the instance is down, the last good answer stands, for less than 24 hours.
      const good = lastGood.get(acct);
      if (good !== undefined && t - good.checkedAt < lastGoodMs) {
        const served = { ...good, lastGood: { unreachableReason: result.reason } };
        if (current) {
          remember(cache, acct, { result: served, until: Math.min(until, good.checkedAt + lastGoodMs) });
        }
        return served;
      }
    } else if (current) {
      // ST-4: an answer that says otherwise (no proof, not found, inconsistent) replaces the last good one.
      lastGood.delete(acct);
    }
    if (current) remember(cache, acct, { result, until });
    return result;
  }

  return {
    lookup(input) {
      const acct = canonicalAcct(input);
      const cached = cache.get(acct);
      if (cached !== undefined && cached.until > now()) return Promise.resolve(cached.result);
      // ST-1: concurrent lookups of one acct share one request.
      let pending = inFlight.get(acct);
      if (pending === undefined) {
        const ticket = {};
        tickets.set(acct, ticket);
        pending = fresh(acct, ticket).finally(() => {
          if (tickets.get(acct) !== ticket) return;
          tickets.delete(acct);
          inFlight.delete(acct);
        });
        inFlight.set(acct, pending);
      }
      return pending;
    },
    forget(input) {
      const acct = canonicalAcct(input);
      cache.delete(acct);
      inFlight.delete(acct);
      tickets.delete(acct);
    },
  };
}
