import {
  bytesEqual,
  decodeDeviceList,
  findDevice,
  verifyDeviceList,
  verifyRotationChain,
  type DeviceList,
  type VerifiedKeyPackage,
} from "@mastodon-mls/bridge";
import { ProtocolError, formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import type { DeviceContext } from "../context.js";

/**
 * ADD-1 (docs/identity.md §6, decision D8): `allowUnverified` adds devices of `no-proof` and `unreachable`
 * accounts because nothing contradicts the claim — but a pin does. Those two statuses are decided (MV-2,
 * MV-7, MV-8) before the pinned key is ever compared (MV-13), so the home instance of a pinned account
 * had only to hide the profile field, or stop answering, for its directory to get any device added: one
 * under a key of its own, or a device the account revoked (a stolen phone, whose certificate by the real
 * key is still valid). For a pinned account the pin stands in for the profile: a KeyPackage is kept only
 * when the directory serves a device list signed by the pinned key (or one a continuity chain leads to from
 * it, KR-6), not older than one already seen (MV-19), naming the device (MV-16), whose certificate is by
 * the list's key or an earlier key chained to it (MV-14). Returns why not (`status: reason`), or undefined.
 * Unpinned accounts are left to the user's decision.
 */
export async function pinContradicts(
  ctx: DeviceContext,
  acct: string,
  kp: VerifiedKeyPackage,
): Promise<string | undefined> {
  const pin = await ctx.pins.get(acct);
  if (pin === undefined) return undefined;
  const identity = formatIdentity(parseAcct(acct));
  const now = ctx.nowSeconds();
  // What the verification that just ran asked for (fresh, cached by the verifier).
  const served = await ctx.verifier.directoryAccount(acct);
  if (served?.deviceList == null) {
    return `stale: the directory serves no device list for ${acct}, whose account key you pinned`;
  }
  const rotations = served.keyRotations;
  const chained = async (from: Uint8Array, to: Uint8Array) =>
    (await verifyRotationChain({ identity, from, to, rotations, now })).ok;

  let list: DeviceList;
  try {
    const listIn = decodeDeviceList(served.deviceList);
    if (listIn.identity !== identity) throw new ProtocolError("acct_mismatch");
    list = await verifyDeviceList(listIn, listIn.accountKey, now);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return `invalid: the device list the directory serves for ${acct} does not verify`;
  }
  if (!(await chained(pin.accountKey, list.accountKey))) {
    return (
      `key-changed: the device list of ${acct} is signed by an account key that is not the one you ` +
      "pinned, and no continuity statement links them: their instance or directory may be impersonating them"
    );
  }
  if (bytesEqual(list.accountKey, pin.accountKey) && list.version < (pin.listVersion ?? 0)) {
    return `stale: the directory serves version ${list.version} of ${acct}'s device list, older than version ${pin.listVersion} already seen`;
  }
  const listed = findDevice(list, kp.certificate.deviceId);
  if (listed === undefined || !bytesEqual(listed.sigKey, kp.sigKey)) {
    return `revoked: the device is not in ${acct}'s device list`;
  }
  if (!(await chained(kp.certificate.accountKey, list.accountKey))) {
    return `key-changed: the device is certified by an account key that is not ${acct}'s`;
  }
  return undefined;
}
