import { Counter, Gauge, type Registry } from "prom-client";

/** The directory's own counters, next to service-kit's HTTP metrics in the same registry. */
export interface DirectoryMetrics {
  claimRequests: Counter;
  handedOut: Counter<"kind">;
  claimReplays: Counter;
  exhausted: Counter;
  keyPackagesStored: Counter;
  devicesRegistered: Counter<"result">;
  /** Device lists stored (a retried PUT of the stored list is not counted). */
  deviceListsStored: Counter;
  /** Registrations a new device list removed, with their KeyPackages. */
  devicesRemoved: Counter;
  /** Requests refused with 429, by limit; `target` counts claims served last-resort KeyPackages instead. */
  rateLimited: Counter<"limit">;
  /** KeyPackages held, as the last sweep counted them. */
  held: Gauge<"kind">;
  purged: Counter;
  sweeps: Counter<"result">;
}

export function createDirectoryMetrics(registry: Registry): DirectoryMetrics {
  const registers = [registry];
  return {
    claimRequests: new Counter({
      name: "keypackages_claim_requests_total",
      help: "POST /v1/claims requests that were answered",
      registers,
    }),
    handedOut: new Counter({
      name: "keypackages_handed_out_total",
      help: "KeyPackages handed out by claims (kind: ordinary or last_resort), repeats excluded",
      labelNames: ["kind"],
      registers,
    }),
    claimReplays: new Counter({
      name: "keypackages_claim_replays_total",
      help: "Claims answered again with the KeyPackage the same requester got within 10 minutes",
      registers,
    }),
    exhausted: new Counter({
      name: "keypackages_exhausted_total",
      help: "Devices that had nothing to hand out, not even a last-resort KeyPackage",
      registers,
    }),
    keyPackagesStored: new Counter({
      name: "keypackages_stored_total",
      help: "KeyPackages newly stored by uploads, last-resort ones included",
      registers,
    }),
    devicesRegistered: new Counter({
      name: "keypackages_device_registrations_total",
      help: "Device registrations by result (created, replaced, unchanged)",
      labelNames: ["result"],
      registers,
    }),
    deviceListsStored: new Counter({
      name: "keypackages_device_lists_stored_total",
      help: "Signed device lists stored by PUT /v1/accounts/:acct/device-list",
      registers,
    }),
    devicesRemoved: new Counter({
      name: "keypackages_devices_removed_total",
      help: "Device registrations removed, with their KeyPackages, by a new device list",
      registers,
    }),
    rateLimited: new Counter({
      name: "keypackages_rate_limited_total",
      help:
        "Rate limits reached, by limit (device, domain, account: answered 429; target: a claim was " +
        "served last-resort KeyPackages because the named account's budget was spent)",
      labelNames: ["limit"],
      registers,
    }),
    held: new Gauge({
      name: "keypackages_held",
      help:
        "KeyPackages stored and unexpired as of the last sweep (kind=ordinary: all devices together; " +
        "kind=last_resort: devices holding one)",
      labelNames: ["kind"],
      registers,
    }),
    purged: new Counter({
      name: "keypackages_expired_purged_total",
      help: "Expired KeyPackages removed by sweeps (claims and uploads also prune, uncounted)",
      registers,
    }),
    sweeps: new Counter({
      name: "keypackages_sweeps_total",
      help: "Sweeps of expired KeyPackages, by result (ok, failed)",
      labelNames: ["result"],
      registers,
    }),
  };
}
