import { profileClientConfig } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { emptyPskIndex, joinGroup } from "ts-mls";
import type { DeviceContext } from "../context.js";
import { decodeMessage } from "../mls/codec.js";
import { checkLeaves, leavesOf } from "../mls/leaves.js";
import { blockedAccts } from "./blocking.js";
import type { InboxWelcomeItem } from "./items.js";
import { openWelcomeInfo } from "../mls/welcomeSigner.js";
import { recordReplacement, replacementClaim } from "./replacement.js";
import type { GroupRecord } from "../store/schemas.js";

/**
 * A Welcome waiting for this device at a hub: join with the matching private KeyPackage, verify every
 * leaf's certificate offline, and mark the group for the self-update every device does on joining
 * (DESIGN §2; run after the inbox batch, see MlsDmClient.sync). A normal KeyPackage's private keys are
 * deleted once the group state holding the join is on disk; the last-resort one stays until replaced.
 */
export async function joinFromWelcome(
  ctx: DeviceContext,
  hub: string,
  item: InboxWelcomeItem,
): Promise<void> {
  const fail = (reason: string) =>
    ctx.emit({ type: "undecryptable", groupId: item.group_id, seq: item.seq, reason: `Welcome: ${reason}` });
  let msg: ReturnType<typeof decodeMessage>;
  try {
    msg = decodeMessage(fromBase64url(item.welcome));
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e));
  }
  if (msg.wireformat !== "mls_welcome") return fail(`a ${msg.wireformat}, not a Welcome`);
  const welcome = msg.welcome;

  const known = ctx.groups.get(item.group_id);
  const refs = welcome.secrets
    .map((s) => toBase64url(s.newMember))
    .filter((r) => /^[A-Za-z0-9_-]{43}$/.test(r));
  if (known?.record.status === "active") {
    // Delivered again (e.g. a crash before the cursor was acknowledged): already joined.
    for (const ref of refs) await forgetUsedKeyPackage(ctx, ref);
    return;
  }
  // A group lives at one hub (DESIGN §6), and its id names it there only: another hub's Welcome naming a
  // group this device was in is not that group. Joining would carry its record over (history, links,
  // forks) to whoever made a group of that id elsewhere, with the device believing it back in the old one.
  if (known !== undefined && known.record.hub !== hub) {
    return fail(
      `it names group ${item.group_id}, which this device knew at another hub (${known.record.hub})`,
    );
  }
  // Older than what this device processed of the group (a crash before the cursor was acknowledged, or a
  // hub sending it again): declined or used already. Not at the same seq: the Welcome of a re-add in one
  // commit has the very seq of the commit that removed the old leaf (D20).
  if (known !== undefined && item.seq < known.record.lastSeq) {
    for (const ref of refs) await forgetUsedKeyPackage(ctx, ref);
    return;
  }
  let kpRecord;
  for (const ref of refs) {
    kpRecord = await ctx.store.readKeyPackage(ref);
    if (kpRecord !== undefined) break;
  }
  if (kpRecord === undefined) {
    // Delivered again at the seq where it was declined or used: its KeyPackage is gone (a last-resort
    // one, which stays, leads to the same join, or the same decline, again).
    if (known !== undefined && item.seq <= known.record.lastSeq) return;
    return fail("no KeyPackage of this device matches it");
  }

  const kpMsg = decodeMessage(fromBase64url(kpRecord.keyPackage));
  if (kpMsg.wireformat !== "mls_key_package") return fail("the stored KeyPackage is damaged");
  let state;
  try {
    state = await joinGroup(
      welcome,
      kpMsg.keyPackage,
      {
        initPrivateKey: fromBase64url(kpRecord.initPrivateKey),
        hpkePrivateKey: fromBase64url(kpRecord.hpkePrivateKey),
        signaturePrivateKey: ctx.signatureKeyPair.signKey,
      },
      emptyPskIndex,
      ctx.cs,
      undefined,
      undefined,
      profileClientConfig(),
    );
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e));
  }
  if (toBase64url(state.groupContext.groupId) !== item.group_id) {
    return fail("it is for another group than the hub says");
  }

  const { checks, newlyInvalid } = await checkLeaves(state.ratchetTree, {});
  const blocked = blockedAccts(ctx);
  const unwanted = [
    ...new Set(leavesOf(state.ratchetTree).flatMap((l) => (blocked.has(l.acct) ? [l.acct] : []))),
  ];
  if (unwanted.length > 0) return decline(ctx, hub, item, kpRecord.ref, unwanted);
  // Which group this one re-creates, if its Welcome says so and the member who added this device may say
  // it (D21, groups/replacement.ts): worked out before the record is first written, so a crash cannot lose it.
  const info = await openWelcomeInfo(
    welcome,
    kpMsg.keyPackage,
    fromBase64url(kpRecord.initPrivateKey),
    ctx.cs,
  ).catch(() => undefined);
  const claim = replacementClaim(ctx, item.group_id, info, checks);
  const g = {
    record: {
      groupId: item.group_id,
      hub,
      status: "active" as const,
      state: null,
      // Everything up to the commit that added us is from before we were a member.
      lastSeq: item.seq,
      leaves: checks,
      buffered: [],
      unsentInvitations: [],
      needsSelfUpdate: true,
      ownLeafUpdatedAt: ctx.nowSeconds(),
      leaving: [],
      ...carriedOver(known?.record),
      ...(claim === undefined ? {} : { replaces: claim.replaces, replacesSigner: claim.signer }),
    },
    state,
    pending: undefined,
  };
  ctx.groups.set(item.group_id, g);
  await ctx.saveGroup(g);
  await forgetUsedKeyPackage(ctx, kpRecord.ref);
  if (claim !== undefined) await recordReplacement(ctx, item.group_id, claim);
  const replaces = claim?.replaces;
  ctx.emit({ type: "joined", groupId: item.group_id, hub, ...(replaces === undefined ? {} : { replaces }) });
  for (const bad of newlyInvalid) {
    ctx.emit({
      type: "invalid_member",
      groupId: item.group_id,
      acct: bad.acct,
      deviceId: bad.deviceId,
      reason: bad.reason ?? "invalid certificate",
    });
  }
}

/**
 * A group with blocked accounts in it (groups/blocking.ts): the state is not kept, nothing is sent, and
 * the group is recorded as left, to be left at its hub (the follow-up work after this batch does it).
 */
async function decline(
  ctx: DeviceContext,
  hub: string,
  item: InboxWelcomeItem,
  keyPackageRef: string,
  blocked: string[],
): Promise<void> {
  const g = {
    record: {
      groupId: item.group_id,
      hub,
      status: "left" as const,
      state: null,
      lastSeq: item.seq,
      leaves: {},
      buffered: [],
      unsentInvitations: [],
      needsSelfUpdate: false,
      ownLeafUpdatedAt: ctx.nowSeconds(),
      leaving: [],
      departPendingSince: ctx.nowSeconds(),
    },
    state: undefined,
    pending: undefined,
  };
  ctx.groups.set(item.group_id, g);
  await ctx.saveGroup(g);
  await forgetUsedKeyPackage(ctx, keyPackageRef);
  ctx.emit({ type: "declined", groupId: item.group_id, hub, blocked });
}

/**
 * DESIGN §2: private KeyPackages are deleted after joining — except last-resort ones: the current one is
 * replaced later, and a retired one is kept until it expires, since other Welcomes may use it (D2).
 */
async function forgetUsedKeyPackage(ctx: DeviceContext, ref: string): Promise<void> {
  ctx.keyPackageUsed = true;
  if (ref === ctx.device.lastResort.ref) {
    if (!ctx.device.lastResort.used) {
      ctx.device = { ...ctx.device, lastResort: { ref, used: true } };
      await ctx.saveDevice();
    }
    return;
  }
  if ((await ctx.store.readKeyPackage(ref))?.lastResort) return;
  await ctx.store.deleteKeyPackage(ref);
}

/**
 * What a device re-added to a group it knew (D20: `removed`, then a Welcome for the same group) keeps of
 * its earlier record: the forks it knew of (who forked the group still counts, for `recreateGroup`'s default
 * and for D21; none makes it stuck any more, and no report is still owed), the commits it took (what later
 * fork notices are checked against: FORK-3) and the group's links (D21).
 */
function carriedOver(before: GroupRecord | undefined): Partial<GroupRecord> {
  if (before === undefined) return {};
  const forks = (before.forks ?? []).map(({ report, ...f }) => ({
    ...f,
    stuck: false,
    ...(report === undefined || report === "pending" ? {} : { report }),
  }));
  return {
    ...(forks.length === 0 ? {} : { forks }),
    ...(before.processedCommits === undefined ? {} : { processedCommits: before.processedCommits }),
    ...(before.replacedBy === undefined ? {} : { replacedBy: before.replacedBy }),
    ...(before.replaces === undefined ? {} : { replaces: before.replaces }),
    ...(before.replacesSigner === undefined ? {} : { replacesSigner: before.replacesSigner }),
  };
}
