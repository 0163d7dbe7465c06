import { Counter, type Registry } from "prom-client";

/** The directory's own counters, next to service-kit's HTTP metrics in the same registry. */
export interface DirectoryMetrics {
  claimRequests: Counter;
  handedOut: Counter<"kind">;
  claimReplays: Counter;
  exhausted: Counter;
  keyPackagesStored: Counter;
  devicesRegistered: Counter<"result">;
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
  };
}
