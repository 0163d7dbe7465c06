import { ProtocolError, canonicalAcct } from "@mastodon-mls/protocol";
import { bytesEqual } from "./crypto.js";
import type { DeviceCertificate } from "./deviceCertificate.js";
import {
  checkDeviceListSuccessor,
  decodeDeviceList,
  findDevice,
  verifyDeviceList,
  type DeviceList,
} from "./deviceList.js";
import {
  decodeKeyRotation,
  verifyKeyRotation,
  verifyRotationChain,
  type KeyRotation,
} from "./keyRotation.js";
import { nowSeconds } from "./signedEnvelope.js";

// What a directory checks when it stores a device list or a certificate (rules DIR-1…DIR-5 in
// docs/identity.md). The directory cannot know the account key is genuine (only the profile says that);
// it keeps lists consistent so clients can detect what it withholds.

export interface DeviceListUpdate {
  list: DeviceList;
  /** The continuity statement to keep and serve, when the account key changed with one. */
  rotation?: KeyRotation;
}

export async function verifyDeviceListUpdate(p: {
  /** The account the bearer token belongs to, `user@domain`. */
  acct: string;
  /** The list the directory holds now (verified when it was stored). */
  stored: DeviceList | undefined;
  next: Uint8Array;
  keyRotation?: Uint8Array;
  now?: number;
}): Promise<DeviceListUpdate> {
  const now = p.now ?? nowSeconds();
  const listIn = decodeDeviceList(p.next);
  // DIR-1: self-consistent and signed by the key it names (DL-1…DL-9).
  const list = await verifyDeviceList(listIn, listIn.accountKey, now);
  // DIR-2: the token's own account.
  if (list.acct !== canonicalAcct(p.acct)) {
    throw new ProtocolError(
      "acct_mismatch",
      `The device list is for ${list.acct}, not ${canonicalAcct(p.acct)}.`,
    );
  }
  // DIR-3: a higher version than the stored one (DL-10), so a replayed old list cannot undo a revocation.
  const { keyChanged } = checkDeviceListSuccessor(p.stored, list);
  if (p.keyRotation === undefined) return { list };
  // DIR-4: a continuity statement, when given, links exactly the stored key to the new one. Without one a
  // key change is still accepted (the user may have lost the old key); peers who pinned it see key-changed.
  const rotation = await verifyKeyRotation(decodeKeyRotation(p.keyRotation), list.identity, now);
  if (
    !keyChanged ||
    !bytesEqual(rotation.oldKey, p.stored!.accountKey) ||
    !bytesEqual(rotation.newKey, list.accountKey)
  ) {
    throw new ProtocolError(
      "invalid_key_rotation",
      "The continuity statement does not link the stored account key to the new list's key.",
    );
  }
  return { list, rotation };
}

/**
 * DIR-5: a certificate (on PUT /v1/devices/:deviceId, and a KeyPackage's on upload) is for a device of the
 * current list, issued by its account key or by an earlier key the stored continuity statements link to it.
 */
export async function checkCertificateInList(
  cert: DeviceCertificate,
  list: DeviceList,
  rotations: readonly Uint8Array[] = [],
  now?: number,
): Promise<void> {
  const listed = findDevice(list, cert.deviceId);
  if (listed === undefined || !bytesEqual(listed.sigKey, cert.sigKey)) {
    throw new ProtocolError("unknown_device", "This device is not in the account's current device list.");
  }
  if (cert.identity !== list.identity) {
    throw new ProtocolError("invalid_certificate", "The certificate is for another account than the list.");
  }
  if (bytesEqual(cert.accountKey, list.accountKey)) return;
  const chain = await verifyRotationChain({
    identity: list.identity,
    from: cert.accountKey,
    to: list.accountKey,
    rotations,
    ...(now === undefined ? {} : { now }),
  });
  if (!chain.ok) {
    throw new ProtocolError(
      "invalid_certificate",
      "The certificate is signed by a key that is not the account's.",
    );
  }
}
