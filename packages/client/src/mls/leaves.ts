import { credentialIdentity, deviceIdText, sha256, verifyLeafCertificate } from "@mastodon-mls/bridge";
import {
  DEVICE_CERT_EXTENSION_TYPE,
  ProtocolError,
  formatAcct,
  parseCanonicalIdentity,
  toBase64url,
} from "@mastodon-mls/protocol";
import type { LeafNode, RatchetTree } from "ts-mls";
import { extensionTypeToNumber } from "ts-mls/extension.js";
import type { LeafCheck } from "../store/schemas.js";

export interface Leaf {
  leafIndex: number;
  node: LeafNode;
  /** `user@domain`, or "" when the credential is not a canonical acct (such a leaf is invalid). */
  acct: string;
  deviceId: string;
}

/**
 * What a leaf says of itself, worked out once per leaf object: ts-mls never changes a leaf node in place
 * (a new key is a new object), and a commit leaves all but a few of a large group's leaves as they were,
 * so a commit no longer decodes every credential and hashes every key again (bench:client).
 */
interface LeafFacts {
  acct: string;
  deviceId: string;
  fingerprint: string;
}
const facts = new WeakMap<LeafNode, LeafFacts>();

function factsOf(leaf: LeafNode): LeafFacts {
  let f = facts.get(leaf);
  if (f === undefined) {
    f = {
      acct: acctOf(leaf) ?? "",
      deviceId: deviceIdText(leaf.signaturePublicKey),
      fingerprint: fingerprint(leaf),
    };
    facts.set(leaf, f);
  }
  return f;
}

/** The non-blank leaves of a tree. Leaf i sits at node 2i. */
export function leavesOf(tree: RatchetTree): Leaf[] {
  const out: Leaf[] = [];
  for (let n = 0; n < tree.length; n += 2) {
    const node = tree[n];
    if (node?.nodeType !== "leaf") continue;
    const { acct, deviceId } = factsOf(node.leaf);
    out.push({ leafIndex: n / 2, node: node.leaf, acct, deviceId });
  }
  return out;
}

export function leafCount(tree: RatchetTree): number {
  return (tree.length + 1) / 2;
}

export function leafAt(tree: RatchetTree, leafIndex: number): LeafNode | undefined {
  const node = tree[leafIndex * 2];
  return node?.nodeType === "leaf" ? node.leaf : undefined;
}

export function acctOf(leaf: LeafNode): string | undefined {
  const identity = credentialIdentity(leaf.credential);
  return identity === undefined ? undefined : formatAcct(parseCanonicalIdentity(identity));
}

function fingerprint(leaf: LeafNode): string {
  const cert = leaf.extensions.find(
    (e) => extensionTypeToNumber(e.extensionType) === DEVICE_CERT_EXTENSION_TYPE,
  );
  const parts = [
    leaf.credential.credentialType === "basic" ? leaf.credential.identity : new Uint8Array(0),
    leaf.signaturePublicKey,
    cert?.extensionData ?? new Uint8Array(0),
  ];
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.byteLength + 4, 0));
  let off = 0;
  for (const p of parts) {
    new DataView(joined.buffer).setUint32(off, p.byteLength);
    joined.set(p, off + 4);
    off += p.byteLength + 4;
  }
  return toBase64url(sha256(joined));
}

export interface LeafCheckResult {
  checks: Record<string, LeafCheck>;
  /** Leaves checked for the first time (or whose certificate changed) that failed. */
  newlyInvalid: LeafCheck[];
}

/**
 * DESIGN §2/§3: after every Welcome and accepted commit, each new leaf's certificate is verified offline.
 * A leaf seen before with the same credential, key and certificate keeps its earlier result. Status is
 * `unverified` (certificate fine, no profile proof checked yet) or `invalid` — never more than we know.
 */
export async function checkLeaves(
  tree: RatchetTree,
  previous: Record<string, LeafCheck>,
  now?: number,
): Promise<LeafCheckResult> {
  const checks: Record<string, LeafCheck> = {};
  const newlyInvalid: LeafCheck[] = [];
  for (const leaf of leavesOf(tree)) {
    const fp = factsOf(leaf.node).fingerprint;
    const before = previous[String(leaf.leafIndex)];
    if (before?.fingerprint === fp) {
      checks[String(leaf.leafIndex)] = before;
      continue;
    }
    let check: LeafCheck;
    try {
      await verifyLeafCertificate(leaf.node, now);
      check = { fingerprint: fp, acct: leaf.acct, deviceId: leaf.deviceId, status: "unverified" };
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      check = {
        fingerprint: fp,
        acct: leaf.acct,
        deviceId: leaf.deviceId,
        status: "invalid",
        reason: e.message,
      };
      newlyInvalid.push(check);
    }
    checks[String(leaf.leafIndex)] = check;
  }
  return { checks, newlyInvalid };
}

/** Accounts with a device that joined, and accounts with a device that left, between two trees. */
export function diffMembers(before: RatchetTree, after: RatchetTree): { added: string[]; removed: string[] } {
  const key = (l: Leaf) => toBase64url(l.node.signaturePublicKey);
  const was = new Map(leavesOf(before).map((l) => [key(l), l.acct]));
  const is = new Map(leavesOf(after).map((l) => [key(l), l.acct]));
  const added = new Set<string>();
  const removed = new Set<string>();
  for (const [k, acct] of is) if (!was.has(k)) added.add(acct);
  for (const [k, acct] of was) if (!is.has(k)) removed.add(acct);
  return { added: [...added].sort(), removed: [...removed].sort() };
}

/** This member's own leaf encryption key (base64url): it changes exactly when the leaf gets fresh keys. */
export function ownLeafKey(state: { ratchetTree: RatchetTree; privatePath: { leafIndex: number } }): string {
  const leaf = leafAt(state.ratchetTree, state.privatePath.leafIndex);
  return leaf === undefined ? "" : toBase64url(leaf.hpkePublicKey);
}
