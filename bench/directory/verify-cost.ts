// What one device-signed request costs the directory in signature checks, step by step (profiling aid
// for the claims figure of `npm run bench:directory`; not a test):
//   node --conditions=mastodon-mls-source --import tsx bench/directory/verify-cost.ts
import { performance } from "node:perf_hooks";
import {
  MemoryNonceStore,
  decodeDeviceCertificate,
  generateSigningKeyPair,
  signDeviceCertificate,
  signRequest,
  verifyDeviceCertificate,
  verifyRequest,
} from "@mastodon-mls/bridge";

const N = Number(process.env.BENCH_N ?? 2000);
const origin = "https://kp.bench.test";
const now = Math.floor(Date.now() / 1000);
const account = await generateSigningKeyPair();
const key = await generateSigningKeyPair();
const certificate = await signDeviceCertificate(
  {
    identity: "acct:alice@bench.test",
    accountKey: account.publicKey,
    sigKey: key.publicKey,
    notBefore: now - 60,
    notAfter: now + 86400,
  },
  account.signKey,
);
const body = new TextEncoder().encode(JSON.stringify({ ciphersuite: 1, accounts: ["bob@bench.test"] }));
const target = { method: "POST", origin, pathAndQuery: "/v1/claims", body };

async function timed(name: string, work: (i: number) => Promise<unknown>): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < N; i++) await work(i);
  console.log(`${name.padEnd(48)} ${(((performance.now() - start) * 1000) / N).toFixed(0).padStart(6)} µs`);
}

const headers: string[] = [];
await timed("signRequest (client side)", async () =>
  headers.push(await signRequest({ certificate, signKey: key.signKey }, target)),
);
const nonces = new MemoryNonceStore();
await timed("verifyRequest (certificate + request signature)", (i) =>
  verifyRequest(headers[i], target, { nonces }),
);
await timed("  of which verifyDeviceCertificate", () =>
  verifyDeviceCertificate(decodeDeviceCertificate(certificate), now),
);
const raw = new Uint8Array(key.publicKey);
await timed("  of which WebCrypto importKey (per verification)", () =>
  crypto.subtle.importKey("raw", raw, "Ed25519", false, ["verify"]),
);
const cryptoKey = await crypto.subtle.importKey("raw", raw, "Ed25519", false, ["verify"]);
const signature = new Uint8Array(64);
await timed("  of which WebCrypto verify (per verification)", () =>
  crypto.subtle.verify("Ed25519", cryptoKey, signature, body),
);
