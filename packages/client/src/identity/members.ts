import {
  decodeDeviceList,
  revokeDevice as revokeFromList,
  safetyNumber,
  verifyDeviceList,
  type DeviceList,
  type MemberVerification,
  type SafetyNumber,
} from "@mastodon-mls/bridge";
import { canonicalAcct, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";
import { ClientError } from "../errors.js";
import { leavesOf } from "../mls/leaves.js";
import { mapLimit } from "../util/mapLimit.js";
import { accountKeyOf, currentList, publishAccountList, recordNewList } from "./accountList.js";

// Member statuses in groups (docs/identity.md §6), the safety-number view, and the account's own
// devices (list, revoke). Everything here runs inside an MlsDmClient operation (serialised, locked),
// except prefetchGroupMembers, which only fills the verifier's caches.

/** A member device to remove: not in its verified account's list, or certified by another key. */
export interface BadLeaf {
  acct: string;
  deviceId: string;
  state: "invalid" | "revoked";
  reason: string;
}

/**
 * Verifies every account of a group; emits `status_changed`. Returns this account's own devices found
 * revoked, and other accounts' leaves found `invalid` (MV-14: certified by a key that does not chain to
 * the account key) or `revoked` (MV-16: not in the account's verified list), confirmed by fresh lookups:
 * devices the account's own key and list disown (DESIGN §3: proposed for removal). Only these two rules,
 * which run after the pinned key matched (MV-13): for an account that is `key-changed`, or whose list or
 * proof does not verify, nothing is returned — a swapped key must not make members remove the person's
 * real devices.
 */
export function verifyGroupMembers(
  ctx: DeviceContext,
  groupId: string,
  opts: VerifyOptions = {},
): Promise<{ revokedOwn: string[]; badLeaves: BadLeaf[] }> {
  // Newly seen accounts are pinned as they are verified; pins.json is written once for the pass.
  return ctx.pins.batch(() => verifyGroupMembersNow(ctx, groupId, opts));
}

/** How many accounts are looked up at once (four requests each: WebFinger, instance, lookup, directory). */
export const LOOKUP_CONCURRENCY = 8;

/** The group's leaves by account (tree order); leaves without a canonical acct are invalid offline. */
function leavesByAcct(ctx: DeviceContext, groupId: string): Map<string, ReturnType<typeof leavesOf>> {
  const byAcct = new Map<string, ReturnType<typeof leavesOf>>();
  for (const l of leavesOf(ctx.activeGroup(groupId).state.ratchetTree)) {
    if (l.acct === "") continue; // not a canonical acct: invalid offline (LeafCheck)
    byAcct.set(l.acct, [...(byAcct.get(l.acct) ?? []), l]);
  }
  return byAcct;
}

/** Whether an account's answers must be fresh: asked for, or it has a device not seen before. */
function needsFresh(
  previous: MemberVerification | undefined,
  leaves: ReturnType<typeof leavesOf>,
  fresh: boolean,
): boolean {
  // A device not seen before may be newer than what is cached (ST rules allow 10 minutes): look again.
  const seenDevices = new Set(previous?.leaves.map((l) => l.deviceId) ?? []);
  return fresh || leaves.some((l) => !seenDevices.has(l.deviceId));
}

/**
 * Whether a verdict from cached answers must be confirmed by fresh ones before it is reported or acted on:
 * a changed status, or a device found revoked or invalid. `unreachable` alone is neither reported nor
 * acted on (the last announced status stands), so it needs no confirmation.
 */
function needsConfirmation(v: MemberVerification, previous: MemberVerification | undefined): boolean {
  const badLeaf = v.leaves.some((l) => l.state === "revoked" || l.state === "invalid");
  return badLeaf || (v.status !== previous?.status && v.status !== "unreachable");
}

/** What a background pass looked up before its verifying operation (prefetchGroupMembers). */
export interface Prefetched {
  /** The verifier's mark when the pass began: a fresh look made since counts as fresh. */
  since: number;
  /** acct → the devices whose leaves the lookups were made for. */
  devices: Map<string, Set<string>>;
}

export interface VerifyOptions {
  /** Fresh lookups for every account. */
  fresh?: boolean;
  /**
   * Answers looked up ahead of time. They stand in for fresh ones only for an account whose leaves in the
   * group are all among those they were made for: a device added since must be looked up anew (its list
   * may be newer than the answers).
   */
  prefetched?: Prefetched;
}

/**
 * The lookups `verifyGroupMembers` will need for these groups, done now and kept in the verifier's caches,
 * with the same rules: fresh answers where it would want them, and fresh answers again where cached ones
 * would have to be confirmed. Reads the device's state and writes nothing (pins set on first use go to an
 * overlay), so it runs outside the device's lock (MlsDmClient's background verification). `groupIds`:
 * active groups with a state. A failure is left for the verifying operation to meet.
 */
export async function prefetchGroupMembers(
  ctx: DeviceContext,
  groupIds: readonly string[],
): Promise<Prefetched> {
  const since = ctx.verifier.mark();
  // One look per account over its leaves in every group, with what each group saw of it last.
  const work = new Map<
    string,
    { leaves: ReturnType<typeof leavesOf>; previous: (MemberVerification | undefined)[]; fresh: boolean }
  >();
  for (const groupId of groupIds) {
    const known = ctx.statuses.get(groupId);
    for (const [acct, leaves] of leavesByAcct(ctx, groupId)) {
      const entry = work.get(acct) ?? { leaves: [], previous: [], fresh: false };
      for (const l of leaves) {
        if (!entry.leaves.some((x) => x.deviceId === l.deviceId)) entry.leaves.push(l);
      }
      const previous = known?.get(acct);
      entry.previous.push(previous);
      entry.fresh ||= needsFresh(previous, leaves, false);
      work.set(acct, entry);
    }
  }
  const pins = ctx.verifier.overlayPins();
  await Promise.all([
    // missingOwnDevices reads the account's own directory answer.
    ctx.verifier.directoryAccount(ctx.device.acct).catch(() => undefined),
    mapLimit([...work], LOOKUP_CONCURRENCY, async ([acct, { leaves, previous, fresh }]) => {
      const nodes = leaves.map((l) => l.node);
      try {
        const v = await ctx.verifier.verify(acct, nodes, { fresh, freshSince: since }, pins);
        if (!fresh && previous.some((p) => needsConfirmation(v, p))) {
          await ctx.verifier.prefetch(acct, { fresh: true, freshSince: since });
        }
      } catch {
        // Met again, and reported, by the verifying operation.
      }
    }),
  ]);
  const devices = new Map([...work].map(([acct, e]) => [acct, new Set(e.leaves.map((l) => l.deviceId))]));
  return { since, devices };
}

async function verifyGroupMembersNow(
  ctx: DeviceContext,
  groupId: string,
  opts: VerifyOptions,
): Promise<{ revokedOwn: string[]; badLeaves: BadLeaf[] }> {
  const g = ctx.activeGroup(groupId);
  const byAcct = leavesByAcct(ctx, groupId);
  let seen = ctx.statuses.get(groupId);
  if (seen === undefined) {
    seen = new Map();
    ctx.statuses.set(groupId, seen);
  }
  for (const acct of seen.keys()) if (!byAcct.has(acct)) seen.delete(acct);
  let dirty = false;
  for (const acct of Object.keys(g.record.memberStatuses ?? {})) {
    if (!byAcct.has(acct)) {
      const { [acct]: _gone, ...rest } = g.record.memberStatuses!;
      g.record.memberStatuses = rest;
      dirty = true;
    }
  }
  const revokedOwn: string[] = [];
  const badLeaves: BadLeaf[] = [];
  const known = seen;
  const prefetched = opts.prefetched;
  // The lookups, several accounts at once; what follows from them, one account after the other in tree
  // order, so events come out in the same order whatever answered first.
  const verdicts = await mapLimit([...byAcct], LOOKUP_CONCURRENCY, async ([acct, leaves]) => {
    const previous = known.get(acct);
    const fresh = needsFresh(previous, leaves, opts.fresh === true);
    const nodes = leaves.map((l) => l.node);
    const covered = prefetched?.devices.get(acct);
    const since =
      prefetched !== undefined && leaves.every((l) => covered?.has(l.deviceId) === true)
        ? { freshSince: prefetched.since }
        : {};
    const v = await ctx.verifier.verify(acct, nodes, { fresh, ...since });
    // Never act on (or report) a revocation or a mismatch from cached answers: confirm it first.
    if (!fresh && needsConfirmation(v, previous)) {
      return ctx.verifier.verify(acct, nodes, { fresh: true, ...since });
    }
    return v;
  });
  // What changes is copied once per pass, on its first change: a copy per account is quadratic in a large
  // group's first verification (512 accounts: 512 copies of 512 entries).
  let statuses: NonNullable<typeof g.record.memberStatuses> | undefined;
  let checks: typeof g.record.leaves | undefined;
  for (const [i, acct] of [...byAcct.keys()].entries()) {
    const v = verdicts[i]!;
    const announced = g.record.memberStatuses?.[acct];
    seen.set(acct, v);
    // `unreachable` is "could not check": the last status announced stands (docs/identity.md §6.1), so it
    // is neither announced nor recorded; `members()` shows it.
    if (v.status === "unreachable") continue;
    if (announced !== v.status) {
      ctx.emit({
        type: "status_changed",
        groupId,
        acct,
        status: v.status,
        previous: announced ?? "unverified",
        reason: v.reason,
      });
    }
    if (announced !== v.status) (statuses ??= { ...(g.record.memberStatuses ?? {}) })[acct] = v.status;
    // The recorded status speaks for these leaves (members() shows it for them only, until re-verified).
    for (const l of byAcct.get(acct) ?? []) {
      const key = String(l.leafIndex);
      const check = g.record.leaves[key];
      if (check === undefined || check.covered === true) continue;
      (checks ??= { ...g.record.leaves })[key] = { ...check, covered: true };
    }
    if (acct === ctx.device.acct) {
      for (const leaf of v.leaves) {
        if (leaf.state === "revoked" && leaf.deviceId !== ctx.deviceId) revokedOwn.push(leaf.deviceId);
      }
    } else if (
      (v.status === "invalid" && v.rule === "MV-14") ||
      (v.status === "revoked" && v.rule === "MV-16")
    ) {
      // Leaf-level findings under a key the pin accepted (MV-13 passed): the account's own key and list
      // disown these devices. Account-level trouble (key-changed, an unverifiable list) never gets here.
      for (const leaf of v.leaves) {
        if (leaf.state === "revoked" || leaf.state === "invalid") {
          badLeaves.push({
            acct,
            deviceId: leaf.deviceId,
            state: leaf.state,
            reason: leaf.reason ?? v.reason,
          });
        }
      }
    }
  }
  if (statuses !== undefined) g.record.memberStatuses = statuses;
  if (checks !== undefined) g.record.leaves = checks;
  if (dirty || statuses !== undefined || checks !== undefined) await ctx.saveGroup(g);
  return { revokedOwn, badLeaves };
}

/**
 * This account's devices that its verified device list names and that are not in the group (DESIGN §3:
 * a user's own devices are kept in every group). None while one of the account's devices is leaving the
 * group (DESIGN §9 leave removes all of them), or when the list cannot be fetched or verified now.
 */
export async function missingOwnDevices(ctx: DeviceContext, groupId: string): Promise<string[]> {
  const g = ctx.activeGroup(groupId);
  if (g.record.leaving.some((l) => l.acct === ctx.device.acct)) return [];
  const key = await ownAccountKey(ctx);
  if (key === undefined) return [];
  const served = await ctx.verifier.directoryAccount(ctx.device.acct);
  if (served?.deviceList == null) return [];
  let list: DeviceList;
  try {
    list = await verifyDeviceList(decodeDeviceList(served.deviceList), key);
  } catch {
    return []; // not under the account key: verification reports it
  }
  // Older than the list this device holds, or than one it saw verified: a rollback (MV-19), which would
  // bring back devices revoked since. Nothing is added from it.
  const seen = Math.max(
    ctx.device.accountList?.version ?? 0,
    (await ctx.pins.get(ctx.device.acct))?.listVersion ?? 0,
  );
  if (list.version < seen) return [];
  const present = new Set(leavesOf(g.state.ratchetTree).map((l) => l.deviceId));
  return list.devices.map((d) => toBase64url(d.deviceId)).filter((id) => !present.has(id));
}

export interface VerifyResult {
  acct: string;
  status: MemberVerification["status"];
  reason: string;
  rule: string;
  /** The account key the profile vouches for (base64url), once known. */
  accountKey?: string;
  /** Whether the pinned key had been confirmed by safety number before this check. */
  wasOobVerified: boolean;
  /** The 60-digit safety number of this account and the peer, when the peer's key is known. */
  safetyNumber?: SafetyNumber;
}

/** The status of one account (fresh lookups), and the safety number to compare. */
export async function verifyAccount(
  ctx: DeviceContext,
  acct: string,
  groupId?: string,
): Promise<{ result: VerifyResult; verification: MemberVerification }> {
  const a = canonicalAcct(acct);
  const leaves =
    groupId === undefined
      ? []
      : leavesOf(ctx.activeGroup(groupId).state.ratchetTree)
          .filter((l) => l.acct === a)
          .map((l) => l.node);
  const v = await ctx.verifier.verify(a, leaves, { fresh: true });
  const own = await ownAccountKey(ctx);
  const number =
    v.accountKey !== undefined && own !== undefined
      ? safetyNumber({ acct: ctx.device.acct, accountKey: own }, { acct: a, accountKey: v.accountKey })
      : undefined;
  return {
    verification: v,
    result: {
      acct: a,
      status: v.status,
      reason: v.reason,
      rule: v.rule,
      ...(v.accountKey === undefined ? {} : { accountKey: toBase64url(v.accountKey) }),
      wasOobVerified: v.wasOobVerified,
      ...(number === undefined ? {} : { safetyNumber: number }),
    },
  };
}

async function ownAccountKey(ctx: DeviceContext): Promise<Uint8Array | undefined> {
  if (ctx.device.accountKey !== null) return fromBase64url(ctx.device.accountKey.publicKey);
  return (await ctx.pins.get(ctx.device.acct))?.accountKey;
}

export interface AccountDevice {
  deviceId: string;
  name: string;
  /** Unix seconds. */
  addedAt: number;
  /** This device. */
  self: boolean;
  /** Registered with the directory (it can be added to groups). */
  registered: boolean;
}

/**
 * The account's devices as its home directory serves them, from the list verified under the account
 * key (this device's, or the pinned one): what the directory claims without a valid list is not shown.
 */
export async function listOwnDevices(
  ctx: DeviceContext,
): Promise<{ version: number; devices: AccountDevice[] }> {
  const served = await ctx.home.directory.accountDevices(ctx.device.acct);
  const key = await ownAccountKey(ctx);
  if (key === undefined)
    throw new ClientError("no_account_key", "the account key of this account is not known here");
  if (served.device_list === null) {
    throw new ClientError(
      "unknown_device",
      `the directory at ${ctx.home.directory.baseUrl} serves no device list for ${ctx.device.acct}`,
    );
  }
  let list;
  try {
    list = await verifyDeviceList(decodeDeviceList(fromBase64url(served.device_list)), key);
  } catch (e) {
    throw new ClientError(
      "device_list_conflict",
      `the device list the directory serves for ${ctx.device.acct} does not verify under this account's key ` +
        `(${e instanceof Error ? e.message : String(e)})`,
    );
  }
  const registered = new Set(served.devices.map((d) => d.device_id));
  return {
    version: list.version,
    devices: list.devices.map((d) => {
      const id = toBase64url(d.deviceId);
      return {
        deviceId: id,
        name: d.name,
        addedAt: d.addedAt,
        self: id === ctx.deviceId,
        registered: registered.has(id),
      };
    }),
  };
}

/**
 * The list to build the next version on: this device's, or a newer one the home directory serves when
 * another device holding the account key (a restored one) published it — whichever verifies under the
 * account key and is newest.
 */
export async function newestOwnList(ctx: DeviceContext): Promise<DeviceList> {
  const key = accountKeyOf(ctx.device);
  let current = await currentList(ctx.device);
  const served = (await ctx.home.directory.accountDevices(ctx.device.acct)).device_list;
  if (served !== null) {
    try {
      const theirs = await verifyDeviceList(decodeDeviceList(fromBase64url(served)), key.publicKey);
      if (theirs.acct === ctx.device.acct && theirs.version > current.version) current = theirs;
    } catch {
      // Not signed by our key: the directory (or a key change) is for the verification to report.
    }
  }
  return current;
}

/**
 * A new version of the account's list without the device: saved, PUT to the home directory (which then
 * drops the device's registration and KeyPackages), then the profile proof names the new version.
 * Needs the account key. Returns the new version.
 */
export async function revokeOwnDevice(ctx: DeviceContext, deviceId: string): Promise<number> {
  const key = accountKeyOf(ctx.device);
  if (deviceId === ctx.deviceId) {
    throw new ClientError("bad_input", "this device cannot revoke itself (use another device, or restore)");
  }
  let device = ctx.device;
  if (device.accountList == null) {
    throw new ClientError("no_account_key", "this device keeps no device list (set up before device lists)");
  }
  // Finish anything left to publish first, so the version we build on is the one the directory holds.
  device = await publishAccountList(ctx.store, device);
  ctx.device = device;
  const current = await newestOwnList(ctx);
  if (!current.devices.some((d) => toBase64url(d.deviceId) === deviceId)) {
    throw new ClientError("unknown_device", `no device ${deviceId} in the list of ${device.acct}`);
  }
  const next = await revokeFromList(current, deviceId, key, ctx.nowSeconds());
  device = await recordNewList(ctx.store, device, next, current.version + 1);
  ctx.device = device;
  device = await publishAccountList(ctx.store, device);
  ctx.device = device;
  ctx.verifier.forget(device.acct);
  return current.version + 1;
}
