/**
 * The Redis key layout. Every key of an account carries the account in a hash tag, `{user@domain}`, so
 * all of one account's data shares a Redis Cluster slot and each script touches one slot only. A canonical
 * acct and a device id (base64url) contain no braces, colons or spaces.
 *
 *   <prefix>{acct}:devices                       HASH  device id → {"certificate","sig_key","registered_at"}
 *   <prefix>{acct}:pool:<device>                 ZSET  ref of each unclaimed KeyPackage, scored by not_after
 *   <prefix>{acct}:kps:<device>                  HASH  ref → KeyPackage (base64url)
 *   <prefix>{acct}:spent:<device>                ZSET  refs already handed out, scored by not_after
 *   <prefix>{acct}:lastresort:<device>           HASH  ref, not_after, kp
 *   <prefix>{acct}:retired:<device>              HASH  ref → "<until>:<kp>", last-resort ones replaced within
 *                                                      the memo window (TTL 10 min after the newest)
 *   <prefix>{acct}:memo:<device>:<requester>.<claim id>  HASH  kp (ordinary) or ref (last-resort), last_resort,
 *                                                      not_after, until (TTL 10 min)
 *   <prefix>{acct}:devicelist                    HASH  list (base64url signed device list), version
 *   <prefix>{acct}:rotations                     LIST  continuity statements (base64url), oldest first, ≤ 16
 *   <prefix>nonce:<device>:<nonce>               STRING request nonces (service-kit RedisNonceStore)
 *   <prefix>rl:<limit>:<key>                     STRING rate-limit counters (@fastify/rate-limit's Redis store)
 *
 * Every pool, kps, spent and lastresort key has a TTL reaching past the last not_after it holds, so a
 * device that is never touched again leaves nothing behind once its KeyPackages expired.
 */
export class RedisKeys {
  constructor(private readonly prefix: string) {}

  /**
   * What every key of an account starts with. The claim script derives the per-device keys below from
   * it (`<base>:pool:<device>` …), so their shapes must not change without it.
   */
  account(acct: string): string {
    return `${this.prefix}{${acct}}`;
  }

  devices(acct: string): string {
    return `${this.account(acct)}:devices`;
  }

  pool(acct: string, deviceId: string): string {
    return `${this.account(acct)}:pool:${deviceId}`;
  }

  keyPackages(acct: string, deviceId: string): string {
    return `${this.account(acct)}:kps:${deviceId}`;
  }

  spent(acct: string, deviceId: string): string {
    return `${this.account(acct)}:spent:${deviceId}`;
  }

  lastResort(acct: string, deviceId: string): string {
    return `${this.account(acct)}:lastresort:${deviceId}`;
  }

  retired(acct: string, deviceId: string): string {
    return `${this.account(acct)}:retired:${deviceId}`;
  }

  memo(acct: string, deviceId: string, requester: string): string {
    return `${this.account(acct)}:memo:${deviceId}:${requester}`;
  }

  deviceList(acct: string): string {
    return `${this.account(acct)}:devicelist`;
  }

  rotations(acct: string): string {
    return `${this.account(acct)}:rotations`;
  }

  /** The namespace of one rate limit's counters. */
  rateLimit(limit: string): string {
    return `${this.prefix}rl:${limit}:`;
  }

  /** A SCAN pattern for every key of one kind (`pool`, `lastresort`) of every device. */
  pattern(kind: "pool" | "lastresort"): string {
    // The prefix is letters, digits and `: _ . -` (config), none of them special in a glob.
    return `${this.prefix}{*}:${kind}:*`;
  }

  /** The account and device of a key `pattern(kind)` matched; undefined for a key of another shape. */
  parse(key: string, kind: "pool" | "lastresort"): { acct: string; deviceId: string } | undefined {
    if (!key.startsWith(`${this.prefix}{`)) return undefined;
    const close = key.indexOf("}:", this.prefix.length);
    if (close < 0) return undefined;
    const rest = key.slice(close + 2);
    if (!rest.startsWith(`${kind}:`)) return undefined;
    const deviceId = rest.slice(kind.length + 1);
    if (!/^[A-Za-z0-9_-]+$/.test(deviceId)) return undefined;
    return { acct: key.slice(this.prefix.length + 1, close), deviceId };
  }
}
