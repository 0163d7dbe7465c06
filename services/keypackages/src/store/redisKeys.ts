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
 *   <prefix>{acct}:memo:<device>:<requester>     HASH  kp, last_resort, not_after, until (TTL 10 min)
 *   <prefix>nonce:<device>:<nonce>               STRING request nonces (service-kit RedisNonceStore)
 */
export class RedisKeys {
  constructor(private readonly prefix: string) {}

  private account(acct: string): string {
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

  memo(acct: string, deviceId: string, requester: string): string {
    return `${this.account(acct)}:memo:${deviceId}:${requester}`;
  }
}
