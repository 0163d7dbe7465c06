import {
  bytesEqual,
  decodeDeviceCertificate,
  decodeDeviceList,
  type DeviceCertificate,
} from "@mastodon-mls/bridge";
import { AccountDevices, ProtocolError, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { Logger } from "@mastodon-mls/service-kit";
import type { DeliveryMetrics } from "./metrics.js";
import { readBodyCapped } from "@mastodon-mls/service-kit";

// A device certificate is self-issued: anyone can sign one naming alice@a.test with an account key of
// their own. What makes a device alice's is her instance's directory: it registers a device only under
// alice's Mastodon token (and, once she has a device list, only if the list names it) and removes the
// registration when a new list drops the device. So before the hub lets a device act for an account of
// its instance (read the account's invitations, send invitations as it), it asks the directory
// (`GET /v1/accounts/:acct/devices`), and keeps the answer for a short while per account, so that this
// costs a round trip per account per cache window rather than per request.

/** What the directory said about one account. */
export interface RegisteredDevices {
  /** device id → base64url account key of the device's registered certificate. */
  devices: ReadonlyMap<string, string>;
  /** When the directory answered (the context's clock, ms). */
  fetchedAt: number;
}

export interface DirectoryDevicesOptions {
  /** The directory's origin (DIRECTORY_URL). */
  directoryUrl: string;
  /** How long an answer is used (DIRECTORY_CACHE_SECONDS). */
  ttlMs: number;
  /**
   * A device missing from the cached answer makes the hub ask again (it may have just registered), unless
   * that device was refused less than this long ago: a device that keeps trying costs the directory one
   * request per this time, however often it tries.
   */
  missRefreshMs: number;
  /** Accounts kept, and refused devices remembered; the least recently used go first. */
  maxAccounts: number;
  timeoutMs: number;
  now: () => number;
  log: Logger;
  metrics: Pick<DeliveryMetrics, "directoryLookups" | "devicesRefused">;
}

/** The answer to `GET /v1/accounts/:acct/devices` is a few certificates; anything larger is wrong. */
const MAX_ANSWER_BYTES = 256 * 1024;

export type AnswerListener = (acct: string, answer: RegisteredDevices) => void;

export class DirectoryDevices {
  private readonly cache = new Map<string, RegisteredDevices>();
  /** device id → when it was last refused. */
  private readonly refused = new Map<string, number>();
  private readonly inFlight = new Map<string, Promise<RegisteredDevices>>();
  private readonly listeners: AnswerListener[] = [];

  constructor(private readonly opts: DirectoryDevicesOptions) {}

  /**
   * Resolves if the directory lists this device, with this certificate's account key, for the
   * certificate's account (as of at most the cache window ago). Throws `device_not_registered` when it
   * does not, `directory_unavailable` when the directory cannot be asked.
   */
  async require(cert: DeviceCertificate): Promise<void> {
    let answer = this.cached(cert.acct);
    if (answer && !isListed(answer, cert)) {
      const refusedAt = this.refused.get(cert.deviceIdText);
      // Perhaps registered since the answer: ask again, unless this device was refused just now.
      if (refusedAt === undefined || this.opts.now() - refusedAt >= this.opts.missRefreshMs)
        answer = undefined;
    }
    answer ??= await this.refresh(cert.acct);
    if (!isListed(answer, cert)) {
      remember(this.refused, cert.deviceIdText, this.opts.now(), this.opts.maxAccounts);
      this.opts.metrics.devicesRefused.inc();
      throw new ProtocolError(
        "device_not_registered",
        `This device is not registered for ${cert.acct} at its instance's directory (or was revoked).`,
      );
    }
  }

  /** The account's registered devices: the cached answer while younger than the window, else a new one. */
  async devices(acct: string): Promise<RegisteredDevices> {
    return this.cached(acct) ?? this.refresh(acct);
  }

  /** True when the account has no answer younger than the cache window. */
  isStale(acct: string): boolean {
    const answer = this.cache.get(acct);
    return answer === undefined || this.opts.now() - answer.fetchedAt >= this.opts.ttlMs;
  }

  /** Asks the directory now (one request per account at a time); every listener hears the answer. */
  refresh(acct: string): Promise<RegisteredDevices> {
    let pending = this.inFlight.get(acct);
    if (!pending) {
      pending = this.ask(acct).finally(() => this.inFlight.delete(acct));
      this.inFlight.set(acct, pending);
    }
    return pending;
  }

  /** `listener` hears every answer the directory gives, e.g. to close the streams of revoked devices. */
  onAnswer(listener: AnswerListener): void {
    this.listeners.push(listener);
  }

  private cached(acct: string): RegisteredDevices | undefined {
    const answer = this.cache.get(acct);
    if (answer === undefined || this.opts.now() - answer.fetchedAt >= this.opts.ttlMs) return undefined;
    remember(this.cache, acct, answer, this.opts.maxAccounts); // a read makes it recently used
    return answer;
  }

  private async ask(acct: string): Promise<RegisteredDevices> {
    const devices = await this.fetchDevices(acct);
    this.opts.metrics.directoryLookups.inc({ result: "ok" });
    const answer = { devices, fetchedAt: this.opts.now() };
    remember(this.cache, acct, answer, this.opts.maxAccounts);
    for (const listener of this.listeners) {
      // A listener's failure is its own: the answer stands for the request that asked.
      try {
        listener(acct, answer);
      } catch (e) {
        this.opts.log.warn({ err: e instanceof Error ? e.message : String(e) }, "directory: listener failed");
      }
    }
    return answer;
  }

  private async fetchDevices(acct: string): Promise<Map<string, string>> {
    const url = new URL(`/v1/accounts/${encodeURIComponent(acct)}/devices`, this.opts.directoryUrl);
    let text: string;
    try {
      const res = await fetch(url, {
        headers: { accept: "application/json" },
        redirect: "error",
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      if (res.status !== 200) {
        await res.body?.cancel();
        // 404 foreign_account: the directory serves another domain than INSTANCE_DOMAIN, a configuration
        // error an operator must see; never a reason to let the device in or to call it forged.
        throw new Error(`answered ${res.status}`);
      }
      text = await readBodyCapped(res, MAX_ANSWER_BYTES);
    } catch (e) {
      throw this.unavailable(acct, e instanceof Error ? e.message : String(e));
    }
    let parsed: AccountDevices;
    try {
      parsed = AccountDevices.parse(JSON.parse(text));
      if (parsed.acct !== acct) throw new Error(`the answer is for ${parsed.acct}`);
      return registrations(acct, parsed);
    } catch (e) {
      throw this.unavailable(acct, `malformed answer (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  private unavailable(acct: string, why: string): ProtocolError {
    this.opts.metrics.directoryLookups.inc({ result: "unavailable" });
    this.opts.log.warn({ acct, why }, "directory: could not read an account's devices");
    return new ProtocolError("directory_unavailable");
  }
}

/** Sets `key` as the most recently used entry, dropping the least recently used beyond `max`. */
function remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  for (const oldest of map.keys()) {
    if (map.size <= max) break;
    map.delete(oldest);
  }
}

/** Whether the answer lists this device with this certificate's account key. */
export function isListed(answer: RegisteredDevices, cert: DeviceCertificate): boolean {
  return isListedAs(answer, cert.deviceIdText, toBase64url(cert.accountKey));
}

/** isListed, for a device known by its id and its certificate's account key (base64url). */
export function isListedAs(answer: RegisteredDevices, deviceIdText: string, accountKeyText: string): boolean {
  return answer.devices.get(deviceIdText) === accountKeyText;
}

/**
 * The registered devices of the answer, with the account key of each one's certificate. The directory
 * verified the certificates and the list when they were written; they are only decoded here. When the
 * account has a list, a registration it does not name is left out (the directory removes such
 * registrations in the step that stores the list; this does not depend on it).
 */
function registrations(acct: string, answer: AccountDevices): Map<string, string> {
  const listed =
    answer.device_list === null
      ? undefined
      : decodeDeviceList(fromBase64url(answer.device_list)).devices.map((d) => d.deviceId);
  const out = new Map<string, string>();
  for (const registered of answer.devices) {
    const cert = decodeDeviceCertificate(fromBase64url(registered.certificate));
    if (cert.identity !== `acct:${acct}`) continue;
    if (listed && !listed.some((id) => bytesEqual(id, cert.deviceId))) continue;
    out.set(toBase64url(cert.deviceId), toBase64url(cert.accountKey));
  }
  return out;
}
