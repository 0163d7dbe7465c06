import {
  createAcctResolver,
  verifyMember,
  type AcctResolver,
  type DirectoryAccount,
  type HttpGet,
  type MemberVerification,
  type Pin,
  type PinStore,
} from "@mastodon-mls/bridge";
import { ProtocolError, canonicalAcct, fromBase64url, parseAcct } from "@mastodon-mls/protocol";
import type { LeafNode } from "ts-mls";
import { ClientError, ServiceUnavailableError } from "../errors.js";
import type { DirectoryClient } from "../transport/directoryClient.js";
import type { ServiceResolver } from "../transport/resolver.js";

/** How accounts are looked up (DESIGN §3). Production needs none of it. */
export interface IdentityOptions {
  /** Where WebFinger and the API of a domain's Mastodon are. Default: the service resolver's development
   * map, else https://<domain>. */
  resolveOrigin?: (domain: string) => string;
  /** Development: plain HTTP to loopback Mastodons (NET-1). Default: what the service resolver says. */
  allowInsecureLoopback?: boolean;
  /** Replaces the lookup transport entirely (tests). */
  get?: HttpGet;
  /** How long a directory's answer for an acct is reused, ms. Default 60 s. */
  directoryTtlMs?: number;
}

export const DIRECTORY_TTL_MS = 60_000;

interface Cached {
  at: number;
  /** undefined: the directory could not be asked (kept as long, like the resolver's failures). */
  value: DirectoryAccount | undefined;
}

/** Accounts whose marks are remembered; the oldest are forgotten first. */
const MAX_FRESH_MARKS = 10_000;

function remember(map: Map<string, number>, acct: string, mark: number): void {
  map.delete(acct);
  if (map.size >= MAX_FRESH_MARKS) map.delete(map.keys().next().value!);
  map.set(acct, mark);
}

/** How fresh an answer must be. */
export interface Freshness {
  /** Ask again rather than use a cached answer. */
  fresh?: boolean;
  /**
   * With `fresh`: an answer asked for afresh after this mark (`mark()`) counts as fresh, so work that
   * looked accounts up ahead of time (`prefetch`) is not done twice.
   */
  freshSince?: number;
}

/**
 * Member verification for one device (docs/identity.md §6): one shared acct resolver (its cache and
 * last-good answers, ST-1…ST-4), each acct's device list fetched from that acct's own home directory
 * (found by domain, as claims are), the device's pins. A network failure is never a mismatch: the
 * lookup says `unreachable`, and a directory that cannot be reached is `directory: undefined` (MV-8).
 */
export class MemberVerifier {
  private readonly resolver: AcctResolver;
  private readonly directories = new Map<string, Cached>();
  /**
   * Marks, from one counter that only goes up (not a clock, which may step back): acct → the mark of
   * its last fresh look; acct → the mark of its last `forget` (a directory answer asked for before it is
   * not kept).
   */
  private marks = 0;
  private readonly freshAt = new Map<string, number>();
  private readonly generations = new Map<string, number>();
  /** acct → the directory request in flight (concurrent askers share it). */
  private readonly asking = new Map<string, Promise<DirectoryAccount | undefined>>();
  private readonly ttl: number;

  constructor(
    private readonly deps: {
      services: ServiceResolver;
      directoryOf: (domain: string) => Promise<DirectoryClient>;
      pins: PinStore;
      clock: () => number;
      /**
       * The device's own account, key and the newest list version it signed (a device holding the account
       * key): an older list served for it is a rollback (MV-19), whatever the pins recorded so far.
       */
      ownList?: () => { acct: string; accountKey: Uint8Array; version: number } | undefined;
    },
    opts: IdentityOptions = {},
  ) {
    const services = deps.services;
    this.ttl = opts.directoryTtlMs ?? DIRECTORY_TTL_MS;
    this.resolver = createAcctResolver({
      resolveOrigin:
        opts.resolveOrigin ?? ((domain) => services.mastodonOrigin?.(domain) ?? `https://${domain}`),
      allowInsecureLoopback: opts.allowInsecureLoopback ?? services.insecureLoopback === true,
      ...(opts.get === undefined ? {} : { get: opts.get }),
      now: deps.clock,
    });
  }

  /** A mark to give as `freshSince`: fresh looks made after this call count as fresh. */
  mark(): number {
    return this.marks;
  }

  get pins(): PinStore {
    return this.deps.pins;
  }

  /** Drops what is cached for an acct (its profile and its directory answer), e.g. before adding it. */
  forget(acct: string): void {
    const a = canonicalAcct(acct);
    this.resolver.forget(a);
    this.directories.delete(a);
    this.asking.delete(a);
    this.freshAt.delete(a);
    remember(this.generations, a, ++this.marks);
  }

  /** Drops the cached answers unless they were asked for afresh since `opts.freshSince`. */
  private refresh(a: string, opts: Freshness): void {
    if (opts.fresh !== true) return;
    const at = this.freshAt.get(a);
    if (opts.freshSince !== undefined && at !== undefined && at > opts.freshSince) return;
    this.forget(a);
    remember(this.freshAt, a, ++this.marks);
  }

  /**
   * Asks for an acct's profile and directory answer and keeps them for `verify`, which then needs no
   * network. Writes nothing (no pins): it runs outside the device's lock, so that a slow instance does
   * not hold up the device's other work (DESIGN §2: lookups run in the background).
   */
  async prefetch(acct: string, opts: Freshness = {}): Promise<void> {
    const a = canonicalAcct(acct);
    this.refresh(a, opts);
    await Promise.all([this.resolver.lookup(a), this.directoryAccount(a)]);
  }

  /** What the acct's home directory serves; undefined when it cannot be reached (never a mismatch). */
  async directoryAccount(acct: string): Promise<DirectoryAccount | undefined> {
    const a = canonicalAcct(acct);
    const hit = this.directories.get(a);
    if (hit !== undefined && this.deps.clock() - hit.at < this.ttl) return hit.value;
    let asking = this.asking.get(a);
    if (asking === undefined) {
      const generation = this.generations.get(a);
      const started = this.deps.clock();
      const request = this.askDirectory(a).then((value) => {
        // Forgotten meanwhile: the answer may predate what made someone forget it.
        if (this.generations.get(a) !== generation) return value;
        // A failure counts from when it came back (a directory that hangs fails only at the timeout).
        this.directories.set(a, { at: value === undefined ? this.deps.clock() : started, value });
        return value;
      });
      asking = request.finally(() => {
        if (this.asking.get(a) === asking) this.asking.delete(a);
      });
      this.asking.set(a, asking);
    }
    return asking;
  }

  private async askDirectory(a: string): Promise<DirectoryAccount | undefined> {
    try {
      const directory = await this.deps.directoryOf(parseAcct(a).domain);
      const served = await directory.accountDevices(a);
      return {
        deviceList: served.device_list === null ? null : fromBase64url(served.device_list),
        keyRotations: served.key_rotations.map((r) => fromBase64url(r)),
      };
    } catch (e) {
      if (e instanceof ServiceUnavailableError || e instanceof ProtocolError) return undefined;
      // A resolver that cannot find the domain's services (no well-known file) is unreachable too.
      if (e instanceof ClientError) return undefined;
      throw e;
    }
  }

  /**
   * Pins that read through to the device's and keep what is set in memory only: for verdicts worked out
   * outside the device's lock, which must not write (prefetchGroupMembers).
   */
  overlayPins(): PinStore {
    const pins = this.deps.pins;
    const set = new Map<string, Pin>();
    return {
      get: (acct) => {
        const own = set.get(canonicalAcct(acct));
        return own === undefined ? pins.get(acct) : Promise.resolve(own);
      },
      set: (acct, pin) => {
        set.set(canonicalAcct(acct), pin);
        return Promise.resolve();
      },
    };
  }

  /** docs/identity.md §6 for one acct and its leaves (in a group, or of KeyPackages about to be added). */
  async verify(
    acct: string,
    leaves: readonly LeafNode[],
    opts: Freshness = {},
    /** Where first-use pins go (default: the device's). */
    pins: PinStore = this.deps.pins,
  ): Promise<MemberVerification> {
    const a = canonicalAcct(acct);
    this.refresh(a, opts);
    const [lookup, directory] = await Promise.all([this.resolver.lookup(a), this.directoryAccount(a)]);
    const own = this.deps.ownList?.();
    return verifyMember({
      acct: a,
      leaves,
      lookup,
      directory,
      pins,
      ...(own !== undefined && own.acct === a ? { knownList: own } : {}),
      now: Math.floor(this.deps.clock() / 1000),
    });
  }
}
