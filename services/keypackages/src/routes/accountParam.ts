import { ProtocolError, formatAcct, parseAcct } from "@mastodon-mls/protocol";

export interface NamedAccount {
  /** `user@domain`, canonical. */
  acct: string;
  domain: string;
}

/**
 * Handles already canonicalised, by the text that was sent: parseAcct's IDNA step costs a few µs per
 * handle on every claim, and claims name the same accounts over and over. Only handles that parse are
 * kept, and it is bounded (the oldest entry goes first).
 */
const canonical = new Map<string, NamedAccount>();
const MAX_CACHED = 10_000;

/** The canonical form of a handle someone sent, or `invalid_acct` saying where it was. */
export function namedAccount(text: string, where: string): NamedAccount {
  const cached = canonical.get(text);
  if (cached) return cached;
  let named: NamedAccount;
  try {
    const parsed = parseAcct(text);
    named = Object.freeze({ acct: formatAcct(parsed), domain: parsed.domain });
  } catch {
    throw new ProtocolError("invalid_acct", `${where} is not an account handle (user@domain).`);
  }
  // The oldest entry goes first when full.
  if (canonical.size >= MAX_CACHED) canonical.delete(canonical.keys().next().value!);
  canonical.set(text, named);
  return named;
}
