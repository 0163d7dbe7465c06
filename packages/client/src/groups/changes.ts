import { randomBytes } from "node:crypto";
import { allowsNewDevices, parseKeyPackage, type VerifiedKeyPackage } from "@mastodon-mls/bridge";
import {
  LIMITS,
  ProtocolError,
  formatAcct,
  fromBase64url,
  parseAcct,
  toBase64url,
} from "@mastodon-mls/protocol";
import {
  createCommit,
  encodeMlsMessage,
  type ClientState,
  type Proposal,
  type UnappliedProposals,
} from "ts-mls";
import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { LOOKUP_CONCURRENCY } from "../identity/members.js";
import { pinContradicts } from "../identity/pinnedAdd.js";
import { encodeWelcomeMessage } from "../mls/codec.js";
import { leavesOf } from "../mls/leaves.js";
import type { LeavingDevice } from "../store/schemas.js";
import { mapLimit } from "../util/mapLimit.js";
import type { BuiltCommit } from "./commitPipeline.js";
import { replacesExtension } from "./replacement.js";

// The three changes a member makes (DESIGN §2: only Add, Remove and Update after creation), each built
// afresh against the state it will be committed on, so a retry after a lost race sees the new members.

export interface Refusal {
  acct: string;
  deviceId?: string;
  reason: string;
}

export interface AddReport {
  added: { acct: string; deviceId: string }[];
  refused: Refusal[];
}

/** A fresh id for one "add these people" intent; persisted with the intent, so retries reuse it. */
export function newClaimId(): string {
  return toBase64url(new Uint8Array(randomBytes(16)));
}

/** Canonical `user@domain` for each input, without duplicates. */
export function canonicalAccts(accts: string[]): string[] {
  return [...new Set(accts.map((a) => formatAcct(parseAcct(a))))];
}

/**
 * Claims one KeyPackage per device of each account from that account's directory and verifies each one
 * (parseKeyPackage: signature, lifetime, certificate; the acct must be the one asked for). A KeyPackage
 * that fails is refused and reported, never added.
 */
export async function claimKeyPackages(
  ctx: DeviceContext,
  accts: string[],
  report: AddReport,
  claimId?: string,
): Promise<VerifiedKeyPackage[]> {
  const byDomain = new Map<string, string[]>();
  for (const acct of accts) {
    const domain = parseAcct(acct).domain;
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), acct]);
  }
  const verified: VerifiedKeyPackage[] = [];
  for (const [domain, domainAccts] of byDomain) {
    const directory = await ctx.directoryOf(domain);
    for (let i = 0; i < domainAccts.length; i += LIMITS.accountsPerClaim) {
      const asked = domainAccts.slice(i, i + LIMITS.accountsPerClaim);
      const answer = await directory.claim(asked, ctx.signer, claimId);
      const answered = new Set<string>();
      for (const result of answer.accounts) {
        const acct = asked.find((a) => a === safeCanonical(result.acct));
        if (acct === undefined) continue; // an account we did not ask for: ignore it entirely
        answered.add(acct);
        if (result.status !== "ok") {
          report.refused.push({
            acct,
            reason: result.status === "no_devices" ? "no registered devices" : result.status,
          });
          continue;
        }
        for (const deviceId of result.exhausted) {
          report.refused.push({ acct, deviceId, reason: "the device has no KeyPackage left" });
        }
        for (const claimed of result.key_packages) {
          try {
            const kp = await parseKeyPackage(fromBase64url(claimed.key_package, LIMITS.keyPackageBytes));
            if (kp.acct !== acct)
              throw new ProtocolError("acct_mismatch", `the KeyPackage is for ${kp.acct}`);
            if (kp.deviceId !== claimed.device_id) {
              throw new ProtocolError("device_mismatch", "the KeyPackage is for another device than claimed");
            }
            verified.push(kp);
          } catch (e) {
            if (!(e instanceof ProtocolError)) throw e;
            report.refused.push({ acct, deviceId: claimed.device_id, reason: e.message });
          }
        }
      }
      for (const acct of asked) {
        if (!answered.has(acct)) report.refused.push({ acct, reason: "the directory did not answer for it" });
      }
    }
  }
  return verified;
}

function safeCanonical(acct: string): string | undefined {
  try {
    return formatAcct(parseAcct(acct));
  } catch {
    return undefined;
  }
}

/** Statuses `allowUnverified` lets through (docs/decisions.md D8): nothing contradicts the claim. */
const UNVERIFIED_ALLOWED = new Set(["no-proof", "unreachable"]);

/**
 * DESIGN §3: a device is added only when its account verifies (`allowsNewDevices`: `verified` or
 * `verified-oob`, docs/identity.md §6) with this very device in the account's verified list — fresh
 * lookups, each acct's list from its own home directory. A KeyPackage whose leaf is marked `invalid`
 * (a certificate not by the account's key, MV-1/MV-14: e.g. a key a directory made) or `revoked` (not in
 * the list, MV-16) is refused with the reason and the account's other devices are checked again without
 * it. With `allowUnverified`, accounts that are `no-proof` or `unreachable` are added on the offline
 * checks alone (D8), except a pinned account's devices not in a list under the pinned key (ADD-1); every other
 * status refuses (`key-changed` above all).
 */
export async function vetKeyPackages(
  ctx: DeviceContext,
  claimed: VerifiedKeyPackage[],
  report: AddReport,
  allowUnverified: boolean,
  /** Lookups asked for afresh after this mark count as fresh (`MemberVerifier.mark`). */
  freshSince?: number,
): Promise<VerifiedKeyPackage[]> {
  const byAcct = new Map<string, VerifiedKeyPackage[]>();
  for (const kp of claimed) byAcct.set(kp.acct, [...(byAcct.get(kp.acct) ?? []), kp]);
  const out: VerifiedKeyPackage[] = [];
  for (const [acct, kps] of byAcct) {
    let candidates = kps;
    for (let pass = 0; pass < 2 && candidates.length > 0; pass++) {
      const v = await ctx.verifier.verify(
        acct,
        candidates.map((kp) => kp.keyPackage.leafNode),
        { fresh: pass === 0, freshSince },
      );
      const bad = new Map(
        v.leaves.filter((l) => l.state === "invalid" || l.state === "revoked").map((l) => [l.deviceId, l]),
      );
      if (bad.size > 0 && bad.size < candidates.length && pass === 0) {
        for (const kp of candidates.filter((k) => bad.has(k.deviceId))) {
          const why = bad.get(kp.deviceId)!;
          report.refused.push({
            acct,
            deviceId: kp.deviceId,
            reason: `${why.state}: ${why.reason ?? v.reason}`,
          });
        }
        candidates = candidates.filter((k) => !bad.has(k.deviceId));
        continue;
      }
      // A profile from the last good lookup (the instance did not answer now, ST-3) is as good as none
      // for adding: the device list served beside it may be as old (D8: an add looks up afresh).
      const status = v.fromLastGood === true && allowsNewDevices(v.status) ? "unreachable" : v.status;
      const why =
        status === v.status
          ? undefined
          : "its instance did not answer now (the profile is the last good one)";
      const ok = allowsNewDevices(status) || (allowUnverified && UNVERIFIED_ALLOWED.has(status));
      if (ok && !allowsNewDevices(status)) {
        // ADD-1: on the offline checks alone, except that a pinned account's device must be in its list.
        for (const kp of candidates) {
          const contradiction = await pinContradicts(ctx, acct, kp);
          if (contradiction === undefined) out.push(kp);
          else report.refused.push({ acct, deviceId: kp.deviceId, reason: contradiction });
        }
      } else if (ok) {
        out.push(...candidates);
      } else {
        const hint = UNVERIFIED_ALLOWED.has(status)
          ? " (add it anyway only if you trust the directory and instance: allowUnverified / --allow-unverified)"
          : "";
        for (const kp of candidates) {
          const leaf = v.leaves.find((l) => l.deviceId === kp.deviceId);
          const reason = why ?? leaf?.reason ?? v.reason;
          report.refused.push({ acct, deviceId: kp.deviceId, reason: `${status}: ${reason}${hint}` });
        }
      }
      break;
    }
  }
  return out;
}

/**
 * Claims and vets KeyPackages of these accounts (the lookups run while the claim does), keeps those of
 * devices not in `present` (base64url signature keys, updated with what is kept) that `wanted` accepts,
 * refusing a KeyPackage this device used before, and hands what is kept to `commit`.
 *
 * The commit is built while the lookups finish and the vetting runs, on the KeyPackages the offline
 * checks kept (the claim's signature, lifetime and certificate checks): vetting nearly always keeps them
 * all, and then that commit is the one returned. When it refuses one, the commit is built again on what
 * it kept. Either way nothing leaves this function before the vetting is done, so no unvetted device can
 * reach the hub. A guess the vetting overruled is dropped: building a commit changes nothing (ts-mls
 * states are values).
 */
async function commitFresh(
  ctx: DeviceContext,
  accts: string[],
  present: Set<string>,
  report: AddReport,
  claimId: string | undefined,
  allowUnverified: boolean,
  wanted: (kp: VerifiedKeyPackage) => boolean,
  commit: (fresh: VerifiedKeyPackage[]) => Promise<BuiltCommit>,
): Promise<BuiltCommit | undefined> {
  // The accounts' fresh lookups (profile, device list) need nothing from the claim: they run while it
  // does (a few accounts at a time, as in every verification), and the vetting below counts them as
  // fresh. A failed claim does not wait for them; they end on their own, their answers cached.
  const since = ctx.verifier.mark();
  const looking = mapLimit(accts, LOOKUP_CONCURRENCY, (acct) =>
    ctx.verifier.prefetch(acct, { fresh: true }).catch(() => undefined),
  );
  const fromDirectory = await claimKeyPackages(ctx, accts, report, claimId);
  const guess = keepFresh(ctx, fromDirectory, new Set(present), wanted);
  const guessed = guess.length === 0 ? undefined : settle(commit(guess));
  await looking;
  const claimed = await vetKeyPackages(ctx, fromDirectory, report, allowUnverified, since);
  const fresh = keepFresh(ctx, claimed, present, wanted, report);
  if (fresh.length === 0) return undefined;
  let built: BuiltCommit;
  if (guessed !== undefined && sameKeyPackages(fresh, guess)) {
    const outcome = await guessed;
    if ("error" in outcome) throw outcome.error;
    built = outcome.built;
  } else {
    built = await commit(fresh);
  }
  report.added = fresh.map((kp) => ({ acct: kp.acct, deviceId: kp.deviceId }));
  return built;
}

/** A promise that never rejects, so that a guess nobody awaits in the end is no unhandled rejection. */
function settle(p: Promise<BuiltCommit>): Promise<{ built: BuiltCommit } | { error: unknown }> {
  return p.then(
    (built) => ({ built }),
    (error: unknown) => ({ error }),
  );
}

function sameKeyPackages(a: readonly VerifiedKeyPackage[], b: readonly VerifiedKeyPackage[]): boolean {
  const refs = new Set(a.map((kp) => kp.ref));
  return a.length === b.length && refs.size === a.length && b.every((kp) => refs.has(kp.ref));
}

/**
 * The claimed KeyPackages of devices not in `present` that `wanted` accepts, less those this device used
 * before (each refused in `report`, when given); what is kept joins `present`.
 */
function keepFresh(
  ctx: DeviceContext,
  claimed: readonly VerifiedKeyPackage[],
  present: Set<string>,
  wanted: (kp: VerifiedKeyPackage) => boolean,
  report?: AddReport,
): VerifiedKeyPackage[] {
  const fresh: VerifiedKeyPackage[] = [];
  for (const kp of claimed) {
    const key = toBase64url(kp.sigKey);
    if (present.has(key) || !wanted(kp)) continue; // e.g. already added by a commit that won
    if (kp.ref in ctx.device.addedKeyPackages) {
      report?.refused.push({
        acct: kp.acct,
        deviceId: kp.deviceId,
        reason:
          "the directory handed out a KeyPackage this device already used for another addition " +
          "(a directory must repeat a claim only for the same claim_id); try again later",
      });
      continue;
    }
    present.add(key);
    fresh.push(kp);
  }
  return fresh;
}

/**
 * A commit adding these KeyPackages' devices after removing `removes` (leaf indexes), with its Welcome;
 * `replaces`: the group this one re-creates, named in the Welcome (D21).
 */
async function commitAdds(
  ctx: DeviceContext,
  state: ClientState,
  fresh: VerifiedKeyPackage[],
  removes: number[],
  replaces: string | undefined,
): Promise<BuiltCommit> {
  const result = await createCommit(
    { state: removes.length === 0 ? state : sparing(state, new Set(removes)), cipherSuite: ctx.cs },
    {
      extraProposals: [
        ...removes.map((leafIndex): Proposal => ({ proposalType: "remove", remove: { removed: leafIndex } })),
        ...fresh.map((kp): Proposal => ({ proposalType: "add", add: { keyPackage: kp.keyPackage } })),
      ],
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
      ...(replaces === undefined ? {} : { groupInfoExtensions: [replacesExtension(replaces)] }),
    },
  );
  if (result.welcome === undefined) throw new Error("ts-mls made no Welcome for an Add");
  return {
    commit: encodeMlsMessage(result.commit),
    welcome: encodeWelcomeMessage(result.welcome),
    newState: result.newState,
    invitees: [...new Set(fresh.map((kp) => kp.acct))],
  };
}

export async function buildAdd(
  ctx: DeviceContext,
  state: ClientState,
  accts: string[],
  report: AddReport,
  claimId?: string,
  allowUnverified = false,
  replaces?: string,
): Promise<BuiltCommit | undefined> {
  report.added = [];
  report.refused = [];
  const present = new Set(leavesOf(state.ratchetTree).map((l) => toBase64url(l.node.signaturePublicKey)));
  const members = present.size;
  return commitFresh(
    ctx,
    accts,
    present,
    report,
    claimId,
    allowUnverified,
    () => true,
    (fresh) => {
      // Checked before any commit is built: a guess too large for the group is not worth building.
      if (members + fresh.length > LIMITS.membersPerGroup) {
        return Promise.reject(
          new ClientError("bad_input", `a group holds at most ${LIMITS.membersPerGroup} devices`),
        );
      }
      return commitAdds(ctx, state, fresh, [], replaces);
    },
  );
}

/**
 * Re-adds devices in one commit (a device stuck after a fork, or behind retention): Removes of their
 * leaves, then Adds of fresh KeyPackages claimed for them (RFC 9420 §12.3 applies the Removes first;
 * SCR-13 allows it). A named device whose KeyPackage is refused or missing is still removed, and the
 * refusal reported: it could not follow the group anyway, and a later `addMembers` adds it. Undefined
 * when there is nothing left to do (a commit that won meanwhile did it).
 */
export async function buildReadd(
  ctx: DeviceContext,
  state: ClientState,
  intent: {
    replacing: Record<string, string>;
    accts: string[];
    claimId?: string;
    allowUnverified?: boolean;
  },
  report: AddReport,
  replaces?: string,
): Promise<BuiltCommit | undefined> {
  report.added = [];
  report.refused = [];
  const own = state.privatePath.leafIndex;
  const leaves = leavesOf(state.ratchetTree);
  // Only the leaves the intent was made for: rebuilt after a lost race (or a restart), a device that is
  // gone (removed, or its account left) is not brought back, and one that a winning commit gave a fresh
  // leaf already (another member's re-add) keeps it.
  const removed = leaves.filter(
    (l) =>
      l.leafIndex !== own &&
      Object.hasOwn(intent.replacing, l.deviceId) &&
      intent.replacing[l.deviceId] === leafKeyOf(l.node),
  );
  if (removed.length === 0) return undefined;
  const replaced = new Set(removed.map((l) => l.deviceId));
  const gone = new Set(removed.map((l) => l.leafIndex));
  const present = new Set(
    leaves.filter((l) => !gone.has(l.leafIndex)).map((l) => toBase64url(l.node.signaturePublicKey)),
  );
  const built = await commitFresh(
    ctx,
    intent.accts,
    present,
    report,
    intent.claimId,
    intent.allowUnverified === true,
    (kp) => replaced.has(kp.deviceId),
    (fresh) => commitAdds(ctx, state, fresh, [...gone], replaces),
  );
  // Refusals of the account's other devices say nothing about the devices asked for.
  report.refused = report.refused.filter((r) => r.deviceId === undefined || replaced.has(r.deviceId));
  return built ?? buildRemoveLeaves(ctx, state, (l) => gone.has(l.leafIndex));
}

/** What tells one leaf of a device from the next (its encryption key): kept in a `readd` intent. */
export function leafKeyOf(node: { hpkePublicKey: Uint8Array }): string {
  return toBase64url(node.hpkePublicKey);
}

/**
 * The proposals held this epoch that a commit changing `changed` leaves can carry by reference: those
 * `committableProposals` keeps, less any on those leaves (a commit changes each leaf once, SCR-9; ts-mls
 * would otherwise refuse to build it).
 */
function sparing(state: ClientState, changed: ReadonlySet<number>): ClientState {
  const kept: UnappliedProposals = {};
  for (const [ref, p] of Object.entries(committableProposals(state))) {
    const leaf = p.proposal.proposalType === "remove" ? p.proposal.remove.removed : p.senderLeafIndex;
    if (leaf === undefined || !changed.has(leaf)) kept[ref] = p;
  }
  return { ...state, unappliedProposals: kept };
}

/** Removes the leaves of these devices (an own device revoked from the account's list), never this one's. */
export function buildRemoveDevices(
  ctx: DeviceContext,
  state: ClientState,
  deviceIds: string[],
): Promise<BuiltCommit | undefined> {
  const wanted = new Set(deviceIds);
  return buildRemoveLeaves(ctx, state, (l) => wanted.has(l.deviceId));
}

/** Removes every leaf of the given accounts, except this device's own (a device cannot commit its own removal). */
export function buildRemove(
  ctx: DeviceContext,
  state: ClientState,
  accts: string[],
): Promise<BuiltCommit | undefined> {
  const wanted = new Set(accts);
  return buildRemoveLeaves(ctx, state, (l) => wanted.has(l.acct));
}

/** A commit removing the leaves `pick` chooses, this device's own excepted; undefined when none is left. */
async function buildRemoveLeaves(
  ctx: DeviceContext,
  state: ClientState,
  pick: (leaf: ReturnType<typeof leavesOf>[number]) => boolean,
): Promise<BuiltCommit | undefined> {
  const own = state.privatePath.leafIndex;
  const leaves = leavesOf(state.ratchetTree).filter((l) => pick(l) && l.leafIndex !== own);
  if (leaves.length === 0) return undefined;
  const result = await createCommit(
    { state: sparing(state, new Set(leaves.map((l) => l.leafIndex))), cipherSuite: ctx.cs },
    {
      extraProposals: leaves.map((l): Proposal => ({
        proposalType: "remove",
        remove: { removed: l.leafIndex },
      })),
      wireAsPublicMessage: true,
    },
  );
  return { commit: encodeMlsMessage(result.commit), newState: result.newState, invitees: [] };
}

/** A commit with an update path and no proposals of its own: fresh keys for this leaf (PCS). */
export async function buildUpdate(ctx: DeviceContext, state: ClientState): Promise<BuiltCommit> {
  const result = await createCommit({ state, cipherSuite: ctx.cs }, { wireAsPublicMessage: true });
  return { commit: encodeMlsMessage(result.commit), newState: result.newState, invitees: [] };
}

/** Proposals this device will commit: Removes of other leaves and Updates by reference, each leaf once. */
export function committableProposals(state: ClientState): UnappliedProposals {
  const own = state.privatePath.leafIndex;
  const kept: UnappliedProposals = {};
  const changed = new Set<number>();
  const entries = Object.entries(state.unappliedProposals);
  // Removes first: a leaf both updated and removed is removed (a commit changes each leaf once, SCR-9).
  for (const [ref, p] of entries) {
    if (p.proposal.proposalType !== "remove") continue;
    const leaf = p.proposal.remove.removed;
    if (leaf === own || changed.has(leaf)) continue;
    changed.add(leaf);
    kept[ref] = p;
  }
  for (const [ref, p] of entries) {
    if (p.proposal.proposalType !== "update") continue;
    const leaf = p.senderLeafIndex;
    if (leaf === undefined || leaf === own || changed.has(leaf)) continue;
    changed.add(leaf);
    kept[ref] = p;
  }
  return kept;
}

/**
 * DESIGN §9: a member holding proposals commits them. The commit carries, by reference, the Remove and
 * Update proposals received this epoch, and a Remove of each member that asked to leave but whose
 * proposal was lost (another commit closed the epoch first). Left out: Add proposals (our clients send
 * none; their KeyPackages would come without invitations) and a proposal to remove this very device,
 * which a device cannot commit itself. Undefined when there is nothing to commit.
 */
export async function buildProposalsCommit(
  ctx: DeviceContext,
  state: ClientState,
  leaving: LeavingDevice[],
): Promise<BuiltCommit | undefined> {
  const own = state.privatePath.leafIndex;
  const kept = committableProposals(state);
  const removed = new Set(
    Object.values(kept).flatMap((p) =>
      p.proposal.proposalType === "remove" ? [p.proposal.remove.removed] : [],
    ),
  );
  const present = new Map(leavesOf(state.ratchetTree).map((l) => [l.leafIndex, l.deviceId]));
  const extra = leaving.filter(
    (l) => l.leafIndex !== own && !removed.has(l.leafIndex) && present.get(l.leafIndex) === l.deviceId,
  );
  if (Object.keys(kept).length === 0 && extra.length === 0) return undefined;
  const result = await createCommit(
    { state: { ...state, unappliedProposals: kept }, cipherSuite: ctx.cs },
    {
      extraProposals: [...new Set(extra.map((l) => l.leafIndex))].map((leafIndex): Proposal => ({
        proposalType: "remove",
        remove: { removed: leafIndex },
      })),
      wireAsPublicMessage: true,
    },
  );
  return { commit: encodeMlsMessage(result.commit), newState: result.newState, invitees: [] };
}
