// Shared by the delivery benchmark's processes: devices with fast signing, request signatures, /proc.
//
// The bridge signs with WebCrypto, importing the key on every signature (about 1.4 ms here); a load
// generator that signs tens of thousands of challenges cannot afford that, so this file signs the same
// bytes with a node:crypto KeyObject made once per key. Nothing here is used by the service; if the bytes
// ever differed from the bridge's, every authentication in the benchmark would fail at once (run.ts checks
// one with the bridge's own verifier before anything else).
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  type KeyObject,
} from "node:crypto";
import { readFileSync } from "node:fs";
import {
  TlsWriter,
  deviceIdOf,
  deviceIdText,
  encodeDeviceCertificateTbs,
  normaliseOrigin,
  type DeviceSigner,
} from "@mastodon-mls/bridge";
import {
  AUTH_SCHEME,
  LABEL_DEVICE_CERT,
  LABEL_REQUEST,
  SIGNATURE_SCHEME_ED25519,
  toBase64url,
} from "@mastodon-mls/protocol";

export interface BenchDevice {
  acct: string;
  deviceId: string;
  /** For ts-mls (KeyPackages) and the bridge: raw public key, PKCS#8 private key. */
  keyPair: { publicKey: Uint8Array; signKey: Uint8Array };
  certificate: Uint8Array;
  signer: DeviceSigner;
  key: KeyObject;
}

/** MLS SignWithLabel with a node:crypto key (the same bytes as the bridge's signLabeled). */
export function signLabeledFast(key: KeyObject, label: string, content: Uint8Array): Uint8Array {
  const tbs = new TlsWriter().string(`MLS 1.0 ${label}`).opaque(content).finish();
  return new Uint8Array(sign(null, tbs, key));
}

function ed25519(): { publicKey: Uint8Array; signKey: Uint8Array; key: KeyObject } {
  const pair = generateKeyPairSync("ed25519");
  const jwk = pair.publicKey.export({ format: "jwk" });
  const signKey = new Uint8Array(pair.privateKey.export({ format: "der", type: "pkcs8" }));
  return { publicKey: new Uint8Array(Buffer.from(jwk.x!, "base64url")), signKey, key: pair.privateKey };
}

/** A device of `acct` with its own account key and a certificate valid for a day. */
export function makeDevice(acct: string): BenchDevice {
  const account = ed25519();
  const sig = ed25519();
  const now = Math.floor(Date.now() / 1000);
  const tbs = {
    identity: `acct:${acct}`,
    accountKey: account.publicKey,
    deviceId: deviceIdOf(sig.publicKey),
    signatureScheme: SIGNATURE_SCHEME_ED25519,
    sigKey: sig.publicKey,
    notBefore: now - 60,
    notAfter: now + 86400,
  };
  const encoded = encodeDeviceCertificateTbs(tbs);
  const signature = signLabeledFast(account.key, LABEL_DEVICE_CERT, encoded);
  const certificate = new TlsWriter().opaque(encoded).opaque(signature).finish();
  return {
    acct,
    deviceId: deviceIdText(sig.publicKey),
    keyPair: { publicKey: sig.publicKey, signKey: sig.signKey },
    certificate,
    signer: { certificate, signKey: sig.signKey },
    key: createPrivateKey({ key: Buffer.from(sig.signKey), format: "der", type: "pkcs8" }),
  };
}

/** The Authorization header the bridge's signRequest would make (docs/protocol.md §3). */
export function authorization(
  device: BenchDevice,
  target: { method: string; origin: string; path: string; body?: Uint8Array },
): string {
  const now = Math.floor(Date.now() / 1000);
  const nonce = new Uint8Array(randomBytes(16));
  const tbs = new TlsWriter()
    .string(target.method.toUpperCase())
    .string(normaliseOrigin(target.origin))
    .string(target.path)
    .opaque(
      new Uint8Array(
        createHash("sha256")
          .update(target.body ?? new Uint8Array(0))
          .digest(),
      ),
    )
    .u64(now)
    .opaque(nonce)
    .finish();
  const signature = signLabeledFast(device.key, LABEL_REQUEST, tbs);
  return `${AUTH_SCHEME} ${toBase64url(device.certificate)}.${now}.${toBase64url(nonce)}.${toBase64url(signature)}`;
}

/** Resident set size of a process, in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return kb === undefined ? NaN : Number(kb) * 1024;
}

/** CPU seconds (user + system) a process used so far. */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuSplit(pid);
  return user + system;
}

/** CPU seconds a process used so far in user and in kernel mode. */
export function cpuSplit(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

/** The q-quantile (0…1) of sorted values. */
export function quantile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Whole-machine CPU time counters from /proc/stat: busy (user … softirq), idle (+ iowait), steal. */
export function machineCpu(): { busy: number; idle: number; steal: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return {
    busy: user! + nice! + system! + irq! + softirq!,
    idle: idle! + iowait!,
    steal: steal ?? 0,
  };
}

/** Shares of the machine between two readings of machineCpu(), in percent. */
export function machineShares(a: ReturnType<typeof machineCpu>, b: ReturnType<typeof machineCpu>) {
  const total = b.busy - a.busy + (b.idle - a.idle) + (b.steal - a.steal);
  const pct = (x: number) => Math.round((100 * x) / Math.max(1, total));
  return {
    busy_pct: pct(b.busy - a.busy),
    idle_pct: pct(b.idle - a.idle),
    steal_pct: pct(b.steal - a.steal),
  };
}
