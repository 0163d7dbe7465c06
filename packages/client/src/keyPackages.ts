import { generateDeviceKeyPackage, type GeneratedKeyPackage } from "@mastodon-mls/bridge";
import { LIMITS, ProtocolError, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import type { DeviceContext } from "./context.js";
import { ClientError } from "./errors.js";
import type { DeviceStore } from "./store/deviceStore.js";
import type { DeviceRecord } from "./store/schemas.js";
import type { DirectoryClient } from "./transport/directoryClient.js";

// KeyPackages (DESIGN §2, §5): private parts are written to disk BEFORE the public parts are uploaded —
// a KeyPackage someone can claim but whose keys we lost would make that person's Welcome unusable.

export interface KeyPackageSource {
  identity: string;
  signatureKeyPair: { publicKey: Uint8Array; signKey: Uint8Array };
  certificate: Uint8Array;
}

export async function generateAndStore(
  store: DeviceStore,
  src: KeyPackageSource,
  lastResort: boolean,
): Promise<GeneratedKeyPackage> {
  const kp = await generateDeviceKeyPackage({ ...src, lastResort });
  await store.writeKeyPackage({
    ref: kp.ref,
    lastResort,
    keyPackage: toBase64url(kp.encoded),
    initPrivateKey: toBase64url(kp.privatePackage.initPrivateKey),
    hpkePrivateKey: toBase64url(kp.privatePackage.hpkePrivateKey),
    notAfter: Number(kp.publicPackage.leafNode.lifetime.notAfter),
  });
  return kp;
}

/** Generates `count` KeyPackages (and optionally a new last-resort one), stores them, then uploads them. */
export async function publishKeyPackages(
  store: DeviceStore,
  directory: DirectoryClient,
  device: DeviceRecord,
  src: KeyPackageSource,
  count: number,
  withLastResort: boolean,
): Promise<{ lastResortRef?: string }> {
  const normal: GeneratedKeyPackage[] = [];
  for (let i = 0; i < count; i++) normal.push(await generateAndStore(store, src, false));
  const last = withLastResort ? await generateAndStore(store, src, true) : undefined;
  for (let i = 0; i < Math.max(normal.length, 1); i += LIMITS.keyPackagesPerUpload) {
    const batch = normal.slice(i, i + LIMITS.keyPackagesPerUpload);
    try {
      await directory.uploadKeyPackages(
        device.deviceId,
        batch.map((k) => k.encoded),
        i === 0 ? last?.encoded : undefined,
        device.mastodonToken,
      );
    } catch (e) {
      // Refused (4xx): the directory keeps none of this batch or the ones after it, so nobody can use
      // their keys; dropping them keeps a directory that refuses every upload (or a revoked token) from
      // making each top-up store another full set. Without an answer they may be stored there: kept.
      if (e instanceof ProtocolError && e.status < 500) {
        const unsent = [...normal.slice(i), ...(i === 0 && last !== undefined ? [last] : [])];
        for (const kp of unsent) await store.deleteKeyPackage(kp.ref);
      }
      throw e;
    }
  }
  return last === undefined ? {} : { lastResortRef: last.ref };
}

export function keyPackageSource(ctx: DeviceContext): KeyPackageSource {
  return {
    identity: ctx.identity,
    signatureKeyPair: ctx.signatureKeyPair,
    certificate: fromBase64url(ctx.device.certificate),
  };
}

/**
 * DESIGN §2: after a Welcome used the last-resort KeyPackage, upload a new one. The old private keys stay
 * until the old KeyPackage expires (D2 in docs/decisions.md): the directory handed it to every requester
 * until now, so Welcomes made from it may still be waiting at hubs.
 */
export async function replaceLastResort(ctx: DeviceContext): Promise<void> {
  if (!ctx.device.lastResort.used) return;
  const { lastResortRef } = await publishKeyPackages(
    ctx.store,
    ctx.home.directory,
    ctx.device,
    keyPackageSource(ctx),
    0,
    true,
  );
  ctx.device = { ...ctx.device, lastResort: { ref: lastResortRef!, used: false } };
  await ctx.saveDevice();
}

/** Below this share of its target, a device tops its KeyPackages up without being asked. */
export const REFILL_BELOW = 0.5;
/** How often the directory's count is checked when no Welcome used a KeyPackage (claims may have). */
export const KEY_PACKAGE_CHECK_SECONDS = 24 * 3600;

/**
 * Issue 4 "the client tops up below a threshold": after a Welcome used one of this device's KeyPackages,
 * and at least daily (others may have claimed KeyPackages without adding the device), the directory's
 * count is checked; below half the target, it is filled up to the target. One request when nothing is due
 * to be uploaded.
 */
export async function topUpKeyPackages(ctx: DeviceContext): Promise<number> {
  const now = ctx.nowSeconds();
  const due = now - (ctx.device.keyPackagesCheckedAt ?? ctx.device.createdAt) >= KEY_PACKAGE_CHECK_SECONDS;
  if (!ctx.keyPackageUsed && !due) return 0;
  const { count } = await ctx.home.directory.keyPackageCount(ctx.deviceId, ctx.signer);
  const added =
    count < Math.ceil(ctx.device.keyPackageTarget * REFILL_BELOW) ? await refillKeyPackages(ctx, count) : 0;
  ctx.keyPackageUsed = false;
  ctx.device = { ...ctx.device, keyPackagesCheckedAt: now };
  await ctx.saveDevice();
  return added;
}

/** How many times its target a device keeps of private KeyPackages the directory does not count. */
const MAX_HELD_TARGETS = 4;

/** Tops the directory up to the device's target count; also forgets expired private KeyPackages. */
export async function refillKeyPackages(ctx: DeviceContext, known?: number): Promise<number> {
  const now = Math.floor(Date.now() / 1000);
  let held = 0;
  for (const ref of await ctx.store.listKeyPackageRefs()) {
    const rec = await ctx.store.readKeyPackage(ref);
    if (rec !== undefined && rec.notAfter < now && ref !== ctx.device.lastResort.ref) {
      await ctx.store.deleteKeyPackage(ref);
    } else if (rec !== undefined && !rec.lastResort) {
      held++;
    }
  }
  // The directory's count, unless the caller has just asked for it.
  const count = known ?? (await ctx.home.directory.keyPackageCount(ctx.deviceId, ctx.signer)).count;
  // Keys of KeyPackages never claimed stay here until they expire; a directory that keeps saying it has
  // none while uploads go unanswered would otherwise have each top-up add a full set.
  if (held >= MAX_HELD_TARGETS * ctx.device.keyPackageTarget && count < ctx.device.keyPackageTarget) {
    throw new ClientError(
      "key_package_refused",
      `this device holds ${held} KeyPackages the directory at ${ctx.home.directory.baseUrl} says it does not ` +
        "have: no more are made until some expire or are used (check that the directory accepts uploads)",
    );
  }
  const missing = Math.max(0, ctx.device.keyPackageTarget - count);
  if (missing > 0) {
    await publishKeyPackages(
      ctx.store,
      ctx.home.directory,
      ctx.device,
      keyPackageSource(ctx),
      missing,
      false,
    );
  }
  return missing;
}
