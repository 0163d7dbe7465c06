import { ProtocolError, formatAcct, parseAcct } from "@mastodon-mls/protocol";

export interface NamedAccount {
  /** `user@domain`, canonical. */
  acct: string;
  domain: string;
}

/** The canonical form of a handle someone sent, or `invalid_acct` saying where it was. */
export function namedAccount(text: string, where: string): NamedAccount {
  try {
    const parsed = parseAcct(text);
    return { acct: formatAcct(parsed), domain: parsed.domain };
  } catch {
    throw new ProtocolError("invalid_acct", `${where} is not an account handle (user@domain).`);
  }
}
