import { bytesEqual, verifyRotationChain, type VerifiedKeyPackage } from "@mastodon-mls/bridge";
import { formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";

/**
 * ADD-1 (docs/identity.md §6, decision D8): `allowUnverified` adds devices of `no-proof` and `unreachable`
 * accounts because nothing contradicts the claim — but a pin does. Those two statuses are decided (MV-2,
 * MV-7, MV-8) before the pinned key is ever compared (MV-13), so an instance that swapped in a key of its
 * own had only to hide the profile field, or stop answering, to get its device added. A KeyPackage of a
 * pinned account is kept only when its certificate is by the pinned key, or by a key the directory's
 * continuity statements (KR-6) link to it in either direction (a rotation, or a device certified before
 * one). Returns the reason for refusing it, or undefined.
 */
export async function pinContradicts(
  ctx: DeviceContext,
  acct: string,
  kp: VerifiedKeyPackage,
): Promise<string | undefined> {
  const pin = await ctx.pins.get(acct);
  if (pin === undefined) return undefined; // nothing to contradict: the user's allowUnverified decides
  const certKey = kp.certificate.accountKey;
  if (bytesEqual(certKey, pin.accountKey)) return undefined;
  // The directory's statements, as cached by the verification that just ran; none when it did not answer.
  const rotations = (await ctx.verifier.directoryAccount(acct))?.keyRotations ?? [];
  const identity = formatIdentity(parseAcct(acct));
  const now = ctx.nowSeconds();
  for (const [from, to] of [
    [pin.accountKey, certKey],
    [certKey, pin.accountKey],
  ] as const) {
    if ((await verifyRotationChain({ identity, from, to, rotations, now })).ok) return undefined;
  }
  return (
    `the device is certified by an account key that is not the one pinned for ${acct}, and no continuity ` +
    "statement links them: their instance or directory may be impersonating them"
  );
}
