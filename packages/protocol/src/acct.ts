import { domainToASCII } from "node:url";
import { LIMITS } from "./constants.js";
import { ProtocolError } from "./errors.js";

/** A canonical account handle: user lower-cased, domain a lower-case IDNA A-label (DESIGN §2). */
export interface Acct {
  readonly user: string;
  readonly domain: string;
}

// Letters, digits, `_`, and `.`/`-` only between them. One quantifier, so matching is linear: the nested
// form /^[a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?$/ (the same language, property-tested in acct.test.ts)
// backtracked cubically, ~30 ms for a 312-character user.
const USER = /^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$/;
const USER_LENGTH = 64;
const USER_TYPED = /^[A-Za-z0-9_.-]+$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
// ASCII that is no part of a host name: `domainToASCII` parses a URL host and silently cuts the input at
// `/`, `?`, `#`, `\`, so "evil.test/.a.test" came out as evil.test (LK-1). Non-ASCII is left to IDNA.
const NOT_HOST_ASCII = /[^A-Za-z0-9.\-\u0080-\uffff]/;

/**
 * Parses `@user@domain`, `user@domain` or `acct:user@domain` into canonical form. Used wherever a person
 * types a handle; `parseCanonicalIdentity` is the strict form for bytes in a credential.
 */
export function parseAcct(input: string): Acct {
  if (input.length > LIMITS.acctLength) throw new ProtocolError("invalid_acct");
  let text = input.trim();
  if (text.startsWith("acct:")) text = text.slice(5);
  if (text.startsWith("@")) text = text.slice(1);
  const at = text.indexOf("@");
  if (at <= 0 || at !== text.lastIndexOf("@")) throw new ProtocolError("invalid_acct");
  const rawUser = text.slice(0, at);
  const user = rawUser.toLowerCase();
  // The length first, so that no pattern ever runs over more than USER_LENGTH characters. The user is
  // checked as typed too: toLowerCase() turns the Kelvin sign (U+212A) into an ASCII "k" (LK-1).
  if (user.length > USER_LENGTH || !USER_TYPED.test(rawUser) || !USER.test(user)) {
    throw new ProtocolError("invalid_acct");
  }
  const domain = canonicalDomain(text.slice(at + 1));
  if (domain === undefined) throw new ProtocolError("invalid_acct");
  return { user, domain };
}

/**
 * A domain in the canonical form of an acct's (a lower-case IDNA A-label), or undefined when it is not a
 * host name. For every domain compared with an acct's: an instance that reports its LOCAL_DOMAIN in
 * Unicode or in capitals is the same instance (LK-7, PUB-1).
 */
export function canonicalDomain(text: string): string | undefined {
  if (NOT_HOST_ASCII.test(text)) return undefined;
  const domain = domainToASCII(text).toLowerCase();
  if (domain === "" || domain.length > 253 || !domain.split(".").every((l) => LABEL.test(l))) {
    return undefined;
  }
  return domain;
}

/** `acct:user@domain` — the MLS credential identity and the form in every signed object. */
export function formatIdentity(acct: Acct): string {
  return `acct:${acct.user}@${acct.domain}`;
}

/** `user@domain` — the form used in URLs and shown to people (with a leading `@`). */
export function formatAcct(acct: Acct): string {
  return `${acct.user}@${acct.domain}`;
}

/** Refuses any identity that is not already canonical: no case folding, no `@` prefix, no Unicode. */
export function parseCanonicalIdentity(identity: string): Acct {
  if (!identity.startsWith("acct:")) throw new ProtocolError("invalid_acct");
  const acct = parseAcct(identity);
  if (formatIdentity(acct) !== identity) throw new ProtocolError("invalid_acct");
  return acct;
}

export function canonicalAcct(input: string): string {
  return formatAcct(parseAcct(input));
}
