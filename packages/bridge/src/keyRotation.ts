import {
  KEY_ROTATION_MAX_BYTES,
  KEY_ROTATIONS_PER_ACCOUNT,
  LABEL_ACCOUNT_KEY_ROTATION,
  LIMITS,
  ProtocolError,
  toBase64url,
} from "@mastodon-mls/protocol";
import { bytesEqual, signLabeled, verifyLabeled, type SigningKeyPair } from "./crypto.js";
import { CLOCK_SKEW_SECONDS, decodeEnvelope, encodeEnvelope, nowSeconds, safeU64 } from "./signedEnvelope.js";
import { TlsDecodeError, TlsReader, TlsWriter } from "./tls.js";

/**
 * Account-key continuity (DESIGN §3, docs/identity.md §2.4), signed by the OLD account key:
 *
 *   struct {
 *     opaque acct<V>;        // UTF-8 "acct:user@domain", canonical
 *     opaque old_key<V>;     // 32 bytes, the signer
 *     opaque new_key<V>;     // 32 bytes
 *     uint64 issued_at;
 *   } AccountKeyRotationTBS;
 *   struct { opaque tbs<V>; opaque signature<V>; } AccountKeyRotation;
 *
 * A peer that pinned the old key follows a chain of these to the new key instead of showing `key-changed`.
 */
export interface KeyRotationTbs {
  identity: string;
  oldKey: Uint8Array;
  newKey: Uint8Array;
  issuedAt: number;
}

export interface KeyRotationIn extends KeyRotationTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  readonly __in: "unverified";
}

export interface KeyRotation extends KeyRotationTbs {
  readonly signature: Uint8Array;
  readonly encoded: Uint8Array;
  readonly __verified: true;
}

const invalid = (why: string) =>
  new ProtocolError("invalid_key_rotation", `The account-key continuity statement is invalid: ${why}.`);

export function encodeKeyRotationTbs(tbs: KeyRotationTbs): Uint8Array {
  return new TlsWriter()
    .string(tbs.identity)
    .opaque(tbs.oldKey)
    .opaque(tbs.newKey)
    .u64(tbs.issuedAt)
    .finish();
}

export async function signKeyRotation(p: {
  identity: string;
  oldKey: SigningKeyPair;
  newKey: Uint8Array;
  now?: number;
}): Promise<Uint8Array> {
  const tbs = encodeKeyRotationTbs({
    identity: p.identity,
    oldKey: p.oldKey.publicKey,
    newKey: p.newKey,
    issuedAt: p.now ?? nowSeconds(),
  });
  return encodeEnvelope(tbs, await signLabeled(p.oldKey.signKey, LABEL_ACCOUNT_KEY_ROTATION, tbs));
}

/** KR-1: framing, lengths and no trailing bytes. */
export function decodeKeyRotation(bytes: Uint8Array): KeyRotationIn {
  try {
    const { tbs, signature } = decodeEnvelope(bytes, KEY_ROTATION_MAX_BYTES);
    const r = new TlsReader(tbs);
    const rotation = {
      identity: r.string(LIMITS.acctLength + 5),
      oldKey: r.opaque(64),
      newKey: r.opaque(64),
      issuedAt: safeU64(r.u64()),
      signature,
      encoded: bytes,
      __in: "unverified" as const,
    };
    r.end();
    return rotation;
  } catch (e) {
    if (e instanceof TlsDecodeError) throw invalid(`malformed (${e.message})`);
    throw e;
  }
}

/**
 * KR-2: for this acct (the identity is compared exactly, so it must be canonical). KR-3: both keys are
 * 32 bytes and differ. KR-4: the old key's signature verifies. KR-5: not issued in the future.
 */
export async function verifyKeyRotation(
  rotation: KeyRotationIn,
  identity: string,
  now: number = nowSeconds(),
): Promise<KeyRotation> {
  if (rotation.identity !== identity) throw invalid("it is for another account"); // KR-2
  if (rotation.oldKey.byteLength !== 32 || rotation.newKey.byteLength !== 32) {
    throw invalid("a key is not 32 bytes"); // KR-3
  }
  if (bytesEqual(rotation.oldKey, rotation.newKey)) throw invalid("the old and new keys are the same");
  const ok = await verifyLabeled(
    rotation.oldKey,
    LABEL_ACCOUNT_KEY_ROTATION,
    encodeKeyRotationTbs(rotation),
    rotation.signature,
  );
  if (!ok) throw invalid("the old key's signature does not verify"); // KR-4
  if (rotation.issuedAt > now + CLOCK_SKEW_SECONDS) throw invalid("it is issued in the future"); // KR-5
  const { __in: _unverified, ...fields } = rotation;
  return { ...fields, __verified: true };
}

export type ChainResult = { ok: true; chain: KeyRotation[] } | { ok: false; reason: string };

/**
 * KR-6: is there a chain of continuity statements from `from` (the pinned key) to `to`? Statements that
 * do not decode or verify are ignored (a directory may serve junk; it cannot forge a link). A key that
 * signed two different successors is a fork — someone else held that key — and breaks the chain. Issue
 * times never go backwards along a chain, and a chain has at most 16 links.
 */
export async function verifyRotationChain(p: {
  identity: string;
  from: Uint8Array;
  to: Uint8Array;
  rotations: readonly Uint8Array[];
  now?: number;
}): Promise<ChainResult> {
  if (bytesEqual(p.from, p.to)) return { ok: true, chain: [] };
  const successors = new Map<string, KeyRotation[]>();
  for (const bytes of p.rotations.slice(0, 4 * KEY_ROTATIONS_PER_ACCOUNT)) {
    let r: KeyRotation;
    try {
      r = await verifyKeyRotation(decodeKeyRotation(bytes), p.identity, p.now);
    } catch {
      continue;
    }
    const key = toBase64url(r.oldKey);
    const list = successors.get(key) ?? [];
    if (!list.some((x) => bytesEqual(x.newKey, r.newKey))) list.push(r);
    successors.set(key, list);
  }
  const chain: KeyRotation[] = [];
  let at = p.from;
  let lastIssued = 0;
  for (let hop = 0; hop < KEY_ROTATIONS_PER_ACCOUNT; hop++) {
    const next = successors.get(toBase64url(at)) ?? [];
    if (next.length === 0)
      return { ok: false, reason: "no continuity statement links the pinned key to the new one" };
    if (next.length > 1) return { ok: false, reason: "a key signed two different successors (a fork)" };
    const link = next[0]!;
    if (link.issuedAt < lastIssued) return { ok: false, reason: "the continuity statements go back in time" };
    if (bytesEqual(link.newKey, p.from) || chain.some((c) => bytesEqual(c.newKey, link.newKey)))
      return { ok: false, reason: "the chain loops" };
    chain.push(link);
    lastIssued = link.issuedAt;
    at = link.newKey;
    if (bytesEqual(at, p.to)) return { ok: true, chain };
  }
  return { ok: false, reason: "the chain is longer than 16 links" };
}
