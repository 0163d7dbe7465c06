import { LIMITS, ProtocolError, RETAIN_EPOCHS, toBase64url } from "@mastodon-mls/protocol";
import {
  decodeMlsMessage,
  encodeMlsMessage,
  type ClientState,
  type Credential,
  type KeyPackage,
  type LeafNode,
  type MLSMessage,
  type Proposal,
  type ProposalOrRef,
  type PublicMessage,
  type UpdatePath,
} from "ts-mls";
import { makeProposalRef } from "ts-mls/authenticatedContent.js";
import { cipherSuite } from "./crypto.js";
import { deviceIdText } from "./deviceCertificate.js";
import { supportsProfile, verifyKeyPackage, type VerifiedKeyPackage } from "./keyPackage.js";
import { credentialIdentity } from "./mlsProfile.js";
import { looksPrivate, readPrivateMessage } from "./privateMessage.js";

/**
 * Handshake screening (DESIGN §2, §6): run by the hub and by every client on every incoming MLSMessage
 * BEFORE ts-mls sees it. ts-mls 1.6.4 aborts the whole Node process on a Remove of a leaf that does not
 * exist, and can be subverted through external commits (notes/ts-mls-facts.md); these rules keep every
 * such message away from it. Screening is structural: it needs no secrets, so the hub (which holds none)
 * runs exactly the same code as a member. Signatures and tags are left to ts-mls.
 *
 * Rules (a refusal is `ProtocolError("screening_failed", "SCR-n: …")` unless noted):
 *
 *   SCR-1  framing: protocol mls10; the wire format is PublicMessage or PrivateMessage (Welcome,
 *          GroupInfo and KeyPackage are not group messages); no trailing bytes (`decodeMlsMessageStrict`).
 *   SCR-2  the message's group id is the view's.
 *   SCR-3  a PrivateMessage must carry `application` content: a handshake inside one cannot be screened.
 *   SCR-4  a PublicMessage must carry a proposal or a commit: application data is never sent in the clear.
 *   SCR-5  the sender is a `member`: external and new_member_* senders are refused (no external joins).
 *   SCR-6  the sender leaf exists (below the leaf count, not blank) and, when the view names the
 *          submitting device's own leaf (the hub does), is that leaf.
 *   SCR-7  epochs: a proposal or commit is for the current epoch; an application message for one of the
 *          current epoch and the `applicationEpochWindow` before it. Refused with `wrong_epoch` (not the
 *          current epoch, or a future one) or `stale_epoch` (an application message older than the window).
 *   SCR-8  only Add, Remove and Update proposals (no PSK, ReInit, ExternalInit, GroupContextExtensions,
 *          custom types), by value or by reference.
 *   SCR-9  every Remove (by value or by reference) names a leaf below the leaf count that is not blank;
 *          a commit changes each leaf at most once (no duplicate Removes, no Remove and Update of the same
 *          leaf) and never removes its own sender.
 *   SCR-10 a proposal by reference resolves to a proposal accepted in this epoch (`acceptedProposals`),
 *          and no reference appears twice.
 *   SCR-11 an Update is only committed by reference, never the committer's own; an Update's leaf keeps
 *          the sender's signature key and credential (a leaf's key and identity never change, DESIGN §2).
 *   SCR-12 a commit with a Remove or an Update, or with no proposal at all, carries an update path.
 *   SCR-13 every Add's KeyPackage passes the bridge's `verifyKeyPackage` (profile, signatures, lifetime,
 *          device certificate), and adds a device that is neither a member already nor added twice. A
 *          device whose leaf the same commit removes is not a member any more: MLS applies Removes before
 *          Adds (RFC 9420 §12.3), so one commit can give a device a fresh leaf (a re-add).
 *   SCR-14 the group has at most `maxMembers` members after the commit.
 *   SCR-15 a commit's update path keeps the committer's signature key and credential.
 *   SCR-16 an Add's leaf encryption key and init key appear nowhere in the tree nor in another Add of the
 *          commit (when the view knows the tree's keys: every member does).
 *   SCR-17 the leaf of an update path or of an Update lists mls10, our ciphersuite and the basic credential
 *          in its capabilities (KP-9 for a leaf a member makes itself: ts-mls 1.6.4 accepts one without,
 *          after which every Add to the group fails).
 *   SCR-18 the encryption keys a member brings itself (its update path's leaf and nodes, an Update's leaf)
 *          appear nowhere in the tree, in no Add of the commit, and not twice (SCR-16 for a member's own
 *          keys: ts-mls 1.6.4 takes such a path, after which every Add fails with "hpke keys not
 *          unique"); checked when the view knows the tree's keys.
 *   SCR-19 at most `maxProposals` proposals are accepted in one epoch: every member holds each one, in the
 *          state it rewrites on every save, until a commit ends the epoch, and our clients commit no Adds.
 *
 * Rules that need to know which device sits at a leaf (SCR-11 key, SCR-13 duplicates, SCR-15) apply when
 * the view provides `deviceAt`.
 */

/** A proposal accepted earlier in the current epoch, which a commit may name by reference. */
export interface AcceptedProposal {
  proposal: Proposal;
  senderLeaf: number;
}

/** What the screener knows about the group: the hub's roster, or a member's ratchet tree. */
export interface GroupView {
  groupId: Uint8Array;
  epoch: bigint;
  /** Leaves below this index may be members; every leaf at or above it is blank. */
  leafCount: number;
  isBlank(leaf: number): boolean;
  /** Device id (base64url SHA-256 of the signature key) of the member at a leaf, when known. */
  deviceAt?(leaf: number): string | undefined;
  /** Credential identity (`acct:user@domain`) of the member at a leaf, when known (SCR-11, SCR-15). */
  identityAt?(leaf: number): string | undefined;
  /**
   * base64url of every HPKE public key in the tree (leaf and parent nodes), when known: an Add reusing one
   * poisons the group for ts-mls 1.6.4 (SCR-16).
   */
  treeKeys?(): ReadonlySet<string>;
  /** The submitting device's own leaf: set by the hub, which knows who is asking. */
  senderLeaf?: number;
  /** Proposals accepted in this epoch, by base64url ProposalRef. */
  acceptedProposals?: ReadonlyMap<string, AcceptedProposal>;
}

export interface ScreenOptions {
  /** Past epochs whose application messages are still accepted (default RETAIN_EPOCHS). */
  applicationEpochWindow?: number;
  /** Default LIMITS.membersPerGroup. */
  maxMembers?: number;
  /** Proposals accepted in one epoch, beyond which another is refused (SCR-19). Default LIMITS.proposalsPerEpoch. */
  maxProposals?: number;
  /** Seconds since the Unix epoch, for KeyPackage lifetimes. */
  now?: number;
  /**
   * Check KeyPackage lifetimes and certificate validity periods of Adds (default true). The hub and the
   * committer check them; a member processing a commit later must not refuse it because time passed.
   */
  checkTimes?: boolean;
}

export interface ScreenedApplication {
  kind: "application";
  epoch: bigint;
}

export interface ScreenedProposal {
  kind: "proposal";
  epoch: bigint;
  senderLeaf: number;
  proposal: Proposal;
  /** base64url ProposalRef, the name a commit uses for it. */
  ref: string;
  /** The verified KeyPackage of an Add proposal. */
  add?: VerifiedKeyPackage;
}

export interface ScreenedCommit {
  kind: "commit";
  epoch: bigint;
  senderLeaf: number;
  /** Added KeyPackages, in the order MLS applies them (which fixes the leaves they land in). */
  adds: VerifiedKeyPackage[];
  /** Leaves blanked by Removes, in commit order. */
  removes: number[];
  /** Leaves updated by referenced Update proposals (the roster does not change). */
  updates: number[];
  hasPath: boolean;
  /** base64url refs of the proposals committed by reference. */
  proposalRefs: string[];
}

export type ScreenedMessage = ScreenedApplication | ScreenedProposal | ScreenedCommit;

const refuse = (rule: string, why: string) => new ProtocolError("screening_failed", `${rule}: ${why}.`);

/** The two refusals of a message that does not decode, as ts-mls tells them apart. */
const invalidMessage = {
  malformed: () => new ProtocolError("invalid_mls_message", "The MLSMessage is truncated or malformed."),
  not_mls: () => new ProtocolError("invalid_mls_message", "The bytes are not an MLSMessage."),
};

/**
 * SCR-1 on bytes: one MLSMessage and not one byte more. Garbage, truncation and anything the decoder
 * chokes on are `invalid_mls_message`; nothing the decoder throws escapes as anything else. PrivateMessages
 * are read by `readPrivateMessage` (the hub's hot path), which refuses exactly what ts-mls refuses.
 */
export function decodeMlsMessageStrict(
  bytes: Uint8Array,
  maxBytes: number = LIMITS.mlsMessageBytes,
): MLSMessage {
  if (bytes.byteLength > maxBytes)
    throw new ProtocolError("payload_too_large", "The MLSMessage is too large.");
  if (looksPrivate(bytes)) {
    const read = readPrivateMessage(bytes);
    if (!read.ok) throw invalidMessage[read.reason]();
    if (read.consumed !== bytes.byteLength) throw new ProtocolError("trailing_bytes");
    return read.msg;
  }
  let decoded: ReturnType<typeof decodeMlsMessage>;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    throw invalidMessage.malformed();
  }
  if (!decoded) throw invalidMessage.not_mls();
  const [msg, consumed] = decoded;
  if (consumed !== bytes.byteLength) throw new ProtocolError("trailing_bytes");
  return msg;
}

/** The base64url ProposalRef of a proposal sent as a PublicMessage (RFC 9420 §5.2). */
export async function proposalRef(pm: PublicMessage): Promise<string> {
  const ref = await makeProposalRef(
    { wireformat: "mls_public_message", content: pm.content, auth: pm.auth },
    (await cipherSuite()).hash,
  );
  return toBase64url(ref);
}

/** Screens one message against the group as the screener knows it. Throws a ProtocolError on refusal. */
export async function screenMessage(
  msg: MLSMessage,
  view: GroupView,
  opts: ScreenOptions = {},
): Promise<ScreenedMessage> {
  if (msg.version !== "mls10") throw refuse("SCR-1", "the protocol version is not mls10");
  if (msg.wireformat === "mls_private_message") {
    const pm = msg.privateMessage;
    checkGroup(pm.groupId, view);
    if (pm.contentType !== "application") {
      throw refuse("SCR-3", `a ${pm.contentType} must be sent as a PublicMessage`);
    }
    checkApplicationEpoch(pm.epoch, view, opts.applicationEpochWindow ?? RETAIN_EPOCHS);
    return { kind: "application", epoch: pm.epoch };
  }
  if (msg.wireformat !== "mls_public_message") {
    throw refuse("SCR-1", `a ${msg.wireformat} is not a group message`);
  }
  const pm = msg.publicMessage;
  const content = pm.content;
  checkGroup(content.groupId, view);
  if (content.contentType === "application") {
    throw refuse("SCR-4", "application data must be sent as a PrivateMessage");
  }
  if (content.sender.senderType !== "member" || pm.senderType !== "member") {
    throw refuse("SCR-5", `sender type ${content.sender.senderType} is not allowed`);
  }
  const senderLeaf = content.sender.leafIndex;
  if (!isMember(view, senderLeaf)) throw refuse("SCR-6", `the sender leaf ${senderLeaf} is not a member`);
  if (view.senderLeaf !== undefined && senderLeaf !== view.senderLeaf) {
    throw refuse("SCR-6", `the sender leaf ${senderLeaf} is not the submitting device's leaf`);
  }
  if (content.epoch !== view.epoch) {
    throw new ProtocolError(
      "wrong_epoch",
      `SCR-7: the ${content.contentType} is for epoch ${content.epoch}, the group is at epoch ${view.epoch}.`,
    );
  }
  if (content.contentType === "proposal") {
    return screenProposal(pm, content.proposal, senderLeaf, view, opts);
  }
  return screenCommit(content.commit.proposals, content.commit.path, senderLeaf, view, opts);
}

/** Decodes (SCR-1) and screens. */
export async function screenMessageBytes(
  bytes: Uint8Array,
  view: GroupView,
  opts: ScreenOptions = {},
): Promise<ScreenedMessage> {
  return screenMessage(decodeMlsMessageStrict(bytes), view, opts);
}

function checkGroup(groupId: Uint8Array, view: GroupView): void {
  if (!sameBytes(groupId, view.groupId)) throw refuse("SCR-2", "the message is for another group");
}

function checkApplicationEpoch(epoch: bigint, view: GroupView, window: number): void {
  if (epoch > view.epoch) {
    throw new ProtocolError(
      "wrong_epoch",
      `SCR-7: the message is for epoch ${epoch}, the group is at epoch ${view.epoch}.`,
    );
  }
  if (epoch < view.epoch - BigInt(window)) {
    throw new ProtocolError(
      "stale_epoch",
      `SCR-7: the message is for epoch ${epoch}, older than the ${window} epochs kept.`,
    );
  }
}

function isMember(view: GroupView, leaf: number): boolean {
  return Number.isSafeInteger(leaf) && leaf >= 0 && leaf < view.leafCount && !view.isBlank(leaf);
}

async function screenProposal(
  pm: PublicMessage,
  proposal: Proposal,
  senderLeaf: number,
  view: GroupView,
  opts: ScreenOptions,
): Promise<ScreenedProposal> {
  const epoch = pm.content.epoch;
  const maxProposals = opts.maxProposals ?? LIMITS.proposalsPerEpoch;
  if ((view.acceptedProposals?.size ?? 0) >= maxProposals) {
    // A member flooding proposals (Adds, which nobody commits) grew every member's saved state without
    // bound: each save rewrote them all, slower with every message.
    throw refuse("SCR-19", `${maxProposals} proposals are held in this epoch already`);
  }
  const ref = await proposalRef(pm);
  switch (proposal.proposalType) {
    case "add": {
      const add = await checkAdd(proposal.add.keyPackage, 0, view, new Set(), new Set(), opts);
      checkNotMember(add, 0, view, []);
      return { kind: "proposal", epoch, senderLeaf, proposal, ref, add };
    }
    case "remove":
      // A member may propose its own Remove: that is how leaving works (DESIGN §9).
      checkRemoveTarget(proposal.remove.removed, view);
      return { kind: "proposal", epoch, senderLeaf, proposal, ref };
    case "update":
      checkUpdateKey(proposal.update.leafNode.signaturePublicKey, senderLeaf, view);
      checkSameIdentity(proposal.update.leafNode.credential, senderLeaf, view, "SCR-11", "an Update");
      checkCapabilities(proposal.update.leafNode, "an Update");
      checkOwnKeys([proposal.update.leafNode.hpkePublicKey], view, new Set(), "an Update");
      return { kind: "proposal", epoch, senderLeaf, proposal, ref };
    default:
      throw refuse("SCR-8", `${proposalTypeName(proposal)} proposals are not allowed`);
  }
}

interface CommittedProposal {
  proposal: Proposal;
  senderLeaf: number;
  byReference: boolean;
}

async function screenCommit(
  proposals: readonly ProposalOrRef[],
  path: UpdatePath | undefined,
  committer: number,
  view: GroupView,
  opts: ScreenOptions,
): Promise<ScreenedCommit> {
  const committed: CommittedProposal[] = [];
  const proposalRefs: string[] = [];
  for (const p of proposals) {
    if (p.proposalOrRefType === "proposal") {
      committed.push({ proposal: p.proposal, senderLeaf: committer, byReference: false });
      continue;
    }
    const ref = toBase64url(p.reference);
    if (proposalRefs.includes(ref)) throw refuse("SCR-10", "a proposal is referenced twice");
    const accepted = view.acceptedProposals?.get(ref);
    if (!accepted) throw refuse("SCR-10", "a proposal reference does not resolve in this epoch");
    proposalRefs.push(ref);
    committed.push({ proposal: accepted.proposal, senderLeaf: accepted.senderLeaf, byReference: true });
  }

  const adds: VerifiedKeyPackage[] = [];
  const addedDevices = new Set<string>();
  const addedKeys = new Set<string>();
  const removes: number[] = [];
  const updates: number[] = [];
  const changed = new Set<number>();
  for (const c of committed) {
    const p = c.proposal;
    switch (p.proposalType) {
      case "add":
        adds.push(await checkAdd(p.add.keyPackage, adds.length, view, addedDevices, addedKeys, opts));
        break;
      case "remove": {
        const leaf = p.remove.removed;
        checkRemoveTarget(leaf, view);
        if (leaf === committer) throw refuse("SCR-9", "a commit may not remove its own sender");
        if (changed.has(leaf)) throw refuse("SCR-9", `leaf ${leaf} is changed twice`);
        changed.add(leaf);
        removes.push(leaf);
        break;
      }
      case "update": {
        if (!c.byReference) throw refuse("SCR-11", "an Update may only be committed by reference");
        if (c.senderLeaf === committer) throw refuse("SCR-11", "a committer may not commit its own Update");
        if (!isMember(view, c.senderLeaf)) throw refuse("SCR-11", "the updated leaf is not a member");
        checkUpdateKey(p.update.leafNode.signaturePublicKey, c.senderLeaf, view);
        checkSameIdentity(p.update.leafNode.credential, c.senderLeaf, view, "SCR-11", "an Update");
        checkCapabilities(p.update.leafNode, "an Update");
        if (changed.has(c.senderLeaf)) throw refuse("SCR-9", `leaf ${c.senderLeaf} is changed twice`);
        changed.add(c.senderLeaf);
        updates.push(c.senderLeaf);
        break;
      }
      default:
        throw refuse("SCR-8", `${proposalTypeName(p)} proposals are not allowed`);
    }
  }
  // After every Remove is known, whatever the order of the list: MLS applies them before the Adds.
  adds.forEach((add, index) => checkNotMember(add, index, view, removes));

  // SCR-18: the keys members bring themselves, checked against the tree and the Adds' keys.
  const ownKeys = committed.flatMap((c) =>
    c.proposal.proposalType === "update" ? [c.proposal.update.leafNode.hpkePublicKey] : [],
  );
  if (path) ownKeys.push(path.leafNode.hpkePublicKey, ...path.nodes.map((n) => n.hpkePublicKey));
  checkOwnKeys(ownKeys, view, addedKeys, "the commit");

  const hasPath = path !== undefined;
  if (!hasPath && (removes.length > 0 || updates.length > 0 || committed.length === 0)) {
    throw refuse("SCR-12", "a commit with a Remove or an Update, or an empty one, must carry an update path");
  }
  if (path && view.deviceAt) {
    const own = view.deviceAt(committer);
    if (own !== undefined && deviceIdText(path.leafNode.signaturePublicKey) !== own) {
      throw refuse("SCR-15", "the update path changes the committer's signature key");
    }
  }
  if (path) {
    checkSameIdentity(path.leafNode.credential, committer, view, "SCR-15", "the update path");
    checkCapabilities(path.leafNode, "the update path");
  }
  const maxMembers = opts.maxMembers ?? LIMITS.membersPerGroup;
  if (countMembers(view) - removes.length + adds.length > maxMembers) {
    throw new ProtocolError("screening_failed", `SCR-14: the group would exceed ${maxMembers} members.`);
  }
  return {
    kind: "commit",
    epoch: view.epoch,
    senderLeaf: committer,
    adds,
    removes,
    updates,
    hasPath,
    proposalRefs,
  };
}

function checkRemoveTarget(leaf: number, view: GroupView): void {
  // The check that keeps ts-mls 1.6.4 from aborting the process (notes/ts-mls-facts.md).
  if (!isMember(view, leaf)) throw refuse("SCR-9", `a Remove names leaf ${leaf}, which is not a member`);
}

/** A leaf's credential never changes (DESIGN §2): otherwise a member could take another account's name. */
function checkSameIdentity(
  credential: Credential,
  leaf: number,
  view: GroupView,
  rule: string,
  what: string,
): void {
  const current = view.identityAt?.(leaf);
  if (current !== undefined && credentialIdentity(credential) !== current) {
    throw refuse(rule, `${what} changes the leaf's credential`);
  }
}

/** SCR-17: a member's new leaf supports what every member uses (KP-9), or no one can be added any more. */
function checkCapabilities(leafNode: LeafNode, what: string): void {
  if (!supportsProfile(leafNode.capabilities)) {
    throw refuse("SCR-17", `${what}'s leaf does not list mls10, our ciphersuite and basic credentials`);
  }
}

/**
 * SCR-18: encryption keys a member made itself are new. ts-mls 1.6.4 checks only that the tree's keys it
 * already had are unique, not the ones a path or an Update brings, and refuses every later Add to a tree
 * holding one twice. `taken` holds the commit's Adds' keys (SCR-16), and collects these.
 */
function checkOwnKeys(keys: Uint8Array[], view: GroupView, taken: Set<string>, what: string): void {
  const inTree = view.treeKeys?.();
  if (inTree === undefined) return;
  for (const key of keys.map(toBase64url)) {
    if (inTree.has(key) || taken.has(key)) {
      throw refuse("SCR-18", `${what} brings an encryption key already in the group`);
    }
    taken.add(key);
  }
}

function checkUpdateKey(signaturePublicKey: Uint8Array, leaf: number, view: GroupView): void {
  const own = view.deviceAt?.(leaf);
  if (own !== undefined && deviceIdText(signaturePublicKey) !== own) {
    throw refuse("SCR-11", "an Update changes the leaf's signature key");
  }
}

async function checkAdd(
  keyPackage: KeyPackage,
  index: number,
  view: GroupView,
  addedDevices: Set<string>,
  addedKeys: Set<string>,
  opts: ScreenOptions,
): Promise<VerifiedKeyPackage> {
  let verified: VerifiedKeyPackage;
  try {
    const encoded = encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage });
    verified = await verifyKeyPackage({ keyPackage, encoded, __in: "unverified" }, opts.now, {
      checkTimes: opts.checkTimes ?? true,
    });
  } catch (e) {
    if (e instanceof ProtocolError) {
      throw new ProtocolError("screening_failed", `SCR-13: Add #${index}: ${e.message}`, { cause: e.code });
    }
    throw refuse("SCR-13", `Add #${index} does not hold a well-formed KeyPackage`);
  }
  if (addedDevices.has(verified.deviceId)) throw refuse("SCR-13", "a device is added twice");
  // SCR-16: ts-mls 1.6.4 accepts an Add whose keys repeat a key of the tree, then every Welcome fails and
  // a later commit with two Adds ends the process through an unhandled rejection.
  const keys = [toBase64url(keyPackage.leafNode.hpkePublicKey), toBase64url(keyPackage.initKey)];
  const inTree = view.treeKeys?.();
  for (const key of keys) {
    if (inTree?.has(key) || addedKeys.has(key)) {
      throw refuse("SCR-16", `Add #${index} reuses an encryption key already in the group`);
    }
    addedKeys.add(key);
  }
  addedDevices.add(verified.deviceId);
  return verified;
}

/** SCR-13: the added device sits at no leaf of the group, unless this very commit removes that leaf. */
function checkNotMember(
  added: VerifiedKeyPackage,
  index: number,
  view: GroupView,
  removes: readonly number[],
): void {
  if (!view.deviceAt) return;
  for (let leaf = 0; leaf < view.leafCount; leaf++) {
    if (!view.isBlank(leaf) && view.deviceAt(leaf) === added.deviceId && !removes.includes(leaf)) {
      throw refuse("SCR-13", `Add #${index} is for a device that is already a member`);
    }
  }
}

function countMembers(view: GroupView): number {
  let n = 0;
  for (let leaf = 0; leaf < view.leafCount; leaf++) if (!view.isBlank(leaf)) n++;
  return n;
}

function proposalTypeName(p: Proposal): string {
  return typeof p.proposalType === "number" ? `custom (0x${p.proposalType.toString(16)})` : p.proposalType;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The view a member screens with: its own ratchet tree and the proposals it holds for this epoch.
 * (ts-mls keys `unappliedProposals` by standard base64; views use base64url.)
 */
export function groupViewFromState(state: ClientState): GroupView {
  const tree = state.ratchetTree;
  const leafAt = (leaf: number) => {
    const node = Number.isSafeInteger(leaf) && leaf >= 0 ? tree[leaf * 2] : undefined;
    return node?.nodeType === "leaf" ? node.leaf : undefined;
  };
  const acceptedProposals = new Map<string, AcceptedProposal>();
  for (const [key, p] of Object.entries(state.unappliedProposals)) {
    if (p.senderLeafIndex === undefined) continue;
    acceptedProposals.set(Buffer.from(key, "base64").toString("base64url"), {
      proposal: p.proposal,
      senderLeaf: p.senderLeafIndex,
    });
  }
  return {
    groupId: state.groupContext.groupId,
    epoch: state.groupContext.epoch,
    leafCount: (tree.length + 1) / 2,
    isBlank: (leaf) => leafAt(leaf) === undefined,
    deviceAt: (leaf) => {
      const node = leafAt(leaf);
      return node ? deviceIdText(node.signaturePublicKey) : undefined;
    },
    identityAt: (leaf) => {
      const node = leafAt(leaf);
      return node ? credentialIdentity(node.credential) : undefined;
    },
    treeKeys: () => {
      const keys = new Set<string>();
      for (const node of tree) {
        if (node?.nodeType === "leaf") keys.add(toBase64url(node.leaf.hpkePublicKey));
        if (node?.nodeType === "parent") keys.add(toBase64url(node.parent.hpkePublicKey));
      }
      return keys;
    },
    acceptedProposals,
  };
}
