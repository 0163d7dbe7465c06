import {
  ProtocolError,
  canonicalAcct,
  formatIdentity,
  parseAcct,
  toBase64url,
  type MemberStatusName,
} from "@mastodon-mls/protocol";
import type { LeafNode } from "ts-mls";
import type { LookupResult } from "./acctLookup.js";
import { bytesEqual, sha256 } from "./crypto.js";
import type { DeviceCertificate } from "./deviceCertificate.js";
import {
  decodeDeviceList,
  findDevice,
  verifyDeviceList,
  type DeviceList,
  type DeviceListIn,
} from "./deviceList.js";
import { verifyLeafCertificate } from "./keyPackage.js";
import { verifyRotationChain } from "./keyRotation.js";
import type { PinStore } from "./pinStore.js";
import { verifyProfileProof } from "./profileProof.js";
import { nowSeconds } from "./signedEnvelope.js";

// The verification status of a member (DESIGN §3), per acct, from the profile (lookup), the directory's
// device list and continuity statements, the member's leaves, and the pin. Rules MV-1…MV-18 in
// docs/identity.md, checked in that order: the first that decides, decides.

export type MemberStatus = MemberStatusName;

/** What the directory serves for the acct (`GET /v1/accounts/:acct/devices`), as bytes. */
export interface DirectoryAccount {
  /** The signed device list, or null when the directory has none. */
  deviceList: Uint8Array | null;
  /** Continuity statements, in any order. */
  keyRotations: readonly Uint8Array[];
}

export interface VerifyMemberInput {
  acct: string;
  /** The acct's leaves in the group, or the leaves of KeyPackages about to be added. */
  leaves: readonly LeafNode[];
  lookup: LookupResult;
  /** undefined: the directory could not be reached. */
  directory: DirectoryAccount | undefined;
  pins: PinStore;
  /**
   * A list version the verifier knows exists under an account key without asking anyone: the account's
   * own device holding that key signed it. An older list under that key is a rollback (MV-19), also before
   * the device saw its own list verified (the home instance and directory are trusted less than the key).
   */
  knownList?: { accountKey: Uint8Array; version: number };
  /** Seconds since the Unix epoch. */
  now?: number;
}

export type LeafState = "ok" | "invalid" | "revoked" | "unchecked";

export interface LeafVerdict {
  /** base64url SHA-256 of the leaf's signature key. */
  deviceId: string;
  state: LeafState;
  reason?: string;
}

export type PinChange = "none" | "first-use" | "same" | "rotated" | "mismatch";

export interface MemberVerification {
  acct: string;
  status: MemberStatus;
  /** For people: what was found, in one sentence. */
  reason: string;
  /** The rule that decided (docs/identity.md). */
  rule: string;
  /** The account key the profile vouches for, once known. */
  accountKey?: Uint8Array;
  /** What happened to the pin: first use pinned it, a continuity chain moved it, or it did not match. */
  pin: PinChange;
  /** Whether the pin was confirmed by safety number before this check (a `key-changed` then blocks sending). */
  wasOobVerified: boolean;
  leaves: LeafVerdict[];
  movedTo?: string;
  /** The profile came from the last good lookup because the instance is unreachable now. */
  fromLastGood?: boolean;
}

/** May devices of an acct in this status be added to a group? Only verified ones (DESIGN §3). */
export function allowsNewDevices(status: MemberStatus): boolean {
  return status === "verified" || status === "verified-oob";
}

export async function verifyMember(input: VerifyMemberInput): Promise<MemberVerification> {
  const acct = canonicalAcct(input.acct);
  const identity = formatIdentity(parseAcct(acct));
  const now = input.now ?? nowSeconds();
  const pinned = await input.pins.get(acct);
  let pin: PinChange = "none";
  const wasOobVerified = pinned?.oobVerified === true;

  const leaves: LeafVerdict[] = [];
  const certs: DeviceCertificate[] = [];
  let fromLastGood: { fromLastGood?: true } = {};
  const result = (
    status: MemberStatus,
    rule: string,
    reason: string,
    extra: Partial<MemberVerification> = {},
  ) =>
    ({
      acct,
      status,
      rule,
      reason,
      pin,
      wasOobVerified,
      leaves,
      ...fromLastGood,
      ...extra,
    }) satisfies MemberVerification;

  // MV-1 (offline): every leaf carries a valid certificate for this acct (LEAF-1…4, CERT-1…7).
  for (const leaf of input.leaves) {
    const deviceId = toBase64url(sha256(leaf.signaturePublicKey));
    try {
      const cert = await verifyLeafCertificate(leaf, now);
      if (cert.acct !== acct)
        throw new ProtocolError("invalid_certificate", `The certificate is for ${cert.acct}.`);
      certs.push(cert);
      leaves.push({ deviceId, state: "unchecked" });
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      leaves.push({ deviceId, state: "invalid", reason: e.message });
    }
  }
  const bad = leaves.filter((l) => l.state === "invalid");
  if (bad.length > 0) {
    return result("invalid", "MV-1", `A device of ${acct} has no valid certificate: ${bad[0]!.reason}`);
  }

  const lookup = input.lookup;
  if (lookup.kind === "found" && lookup.lastGood !== undefined) fromLastGood = { fromLastGood: true };
  switch (lookup.kind) {
    case "unreachable": // MV-2: a transport failure is never reported as a mismatch.
      return result("unreachable", "MV-2", `Could not check ${acct}'s profile: ${lookup.reason}.`);
    case "invalid": // MV-3
      return result(
        "invalid",
        "MV-3",
        `${acct}'s instance gives answers that do not agree (${lookup.reason}).`,
      );
    case "not-found": // MV-4
      return result(
        "gone",
        "MV-4",
        lookup.gone
          ? `${acct} was deleted or closed on their instance.`
          : `${acct} does not exist on their instance.`,
      );
    default:
      break;
  }
  if (lookup.account.suspended) {
    return result("suspended", "MV-5", `${acct} is suspended by their instance's moderators.`); // MV-5
  }
  if (lookup.account.movedTo !== null) {
    return result("moved", "MV-6", `${acct} has moved to ${lookup.account.movedTo}.`, {
      movedTo: lookup.account.movedTo,
    }); // MV-6
  }
  if (lookup.kind === "no-proof") return result("no-proof", "MV-7", `${lookup.reason}.`); // MV-7
  const proof = lookup.proof;

  if (input.directory === undefined) {
    return result("unreachable", "MV-8", `Could not reach the directory that holds ${acct}'s devices.`); // MV-8
  }
  if (input.directory.deviceList === null) {
    return result(
      "stale",
      "MV-9",
      `${acct}'s profile names device list version ${proof.deviceListVersion}, but the directory serves none.`,
    ); // MV-9
  }

  // MV-10: the list is well formed and is this acct's.
  let listIn: DeviceListIn;
  try {
    listIn = decodeDeviceList(input.directory.deviceList);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return result("invalid", "MV-10", `The directory's device list for ${acct} is malformed.`);
  }
  if (listIn.identity !== identity) {
    return result("invalid", "MV-10", `The directory serves another account's device list for ${acct}.`);
  }

  // MV-11: the directory's list is signed by the key the profile names. If not and the versions differ,
  // one of them has not caught up with an account-key rotation: stale. Same version, different keys: a lie.
  const accountKey = listIn.accountKey;
  if (!bytesEqual(sha256(accountKey), proof.fingerprint)) {
    if (listIn.version !== proof.deviceListVersion) {
      return result(
        "stale",
        "MV-11",
        `${acct}'s profile (version ${proof.deviceListVersion}) and the directory (version ${listIn.version}) name different account keys; one of them is behind.`,
      );
    }
    return result(
      "invalid",
      "MV-11",
      `The directory's account key for ${acct} is not the one their profile names.`,
    );
  }

  // MV-12: the list and the profile proof verify under that key.
  let list: DeviceList;
  try {
    list = await verifyDeviceList(listIn, accountKey, now);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return result("invalid", "MV-12", `${acct}'s device list does not verify: ${e.message}`, { accountKey });
  }
  try {
    await verifyProfileProof(proof, identity, accountKey);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return result("invalid", "MV-12", `${acct}'s profile proof does not verify: ${e.message}`, {
      accountKey,
    });
  }

  // MV-13: trust on first use, or the pinned key, or a continuity chain from it.
  let oob = false;
  if (pinned === undefined) {
    await input.pins.set(acct, { accountKey, oobVerified: false, pinnedAt: now });
    pin = "first-use";
  } else if (bytesEqual(pinned.accountKey, accountKey)) {
    pin = "same";
    oob = pinned.oobVerified;
  } else {
    const chain = await verifyRotationChain({
      identity,
      from: pinned.accountKey,
      to: accountKey,
      rotations: input.directory.keyRotations,
      now,
    });
    if (!chain.ok) {
      pin = "mismatch";
      // A confirmed pin contradicted: remembered with it, so that hiding the proof or answering otherwise
      // afterwards (MV-3…MV-7 come before this check) cannot lift the block on sending by itself.
      if (pinned.oobVerified && pinned.keyChangedAt === undefined) {
        await input.pins.set(acct, { ...pinned, keyChangedAt: now });
      }
      return result(
        "key-changed",
        "MV-13",
        `${acct}'s account key is not the one you saw first (${chain.reason}). Their instance's admin, or someone who took over the account, may be impersonating them.`,
        { accountKey },
      );
    }
    // The safety number changes with the key, so a confirmation of the old one does not carry over.
    await input.pins.set(acct, { accountKey, oobVerified: false, pinnedAt: now });
    pin = "rotated";
  }

  // MV-14: every leaf is certified by the account key, or by an earlier key that chains to it.
  for (const [i, cert] of certs.entries()) {
    if (bytesEqual(cert.accountKey, accountKey)) continue;
    const chain = await verifyRotationChain({
      identity,
      from: cert.accountKey,
      to: accountKey,
      rotations: input.directory.keyRotations,
      now,
    });
    if (!chain.ok) {
      leaves[i] = {
        deviceId: cert.deviceIdText,
        state: "invalid",
        reason: "certified by a key that is not the account's",
      };
    }
  }
  if (leaves.some((l) => l.state === "invalid")) {
    return result(
      "invalid",
      "MV-14",
      `A device of ${acct} is certified by a key that is not their account key.`,
      {
        accountKey,
      },
    );
  }

  // MV-19: a list older than one already seen verified under this key is a rollback (a directory and
  // instance replaying an old list and proof, both validly signed): it would bring back revoked devices,
  // or make listed ones look revoked. Nothing in it is believed.
  const known = input.knownList;
  const seenVersion = Math.max(
    pin === "same" ? (pinned?.listVersion ?? 0) : 0,
    known !== undefined && bytesEqual(known.accountKey, accountKey) ? known.version : 0,
  );
  if (list.version < seenVersion) {
    return result(
      "stale",
      "MV-19",
      `The device list served for ${acct} (version ${list.version}) is older than version ${seenVersion}, already seen: a rollback.`,
      { accountKey },
    );
  }
  /** Remembers this list's version with the pin once it is believed (MV-16, MV-18). */
  const recordVersion = async () => {
    if (fromLastGood.fromLastGood === true) return;
    const current = await input.pins.get(acct);
    if (current === undefined || !bytesEqual(current.accountKey, accountKey)) return;
    if ((current.listVersion ?? 0) >= list.version) return;
    await input.pins.set(acct, { ...current, listVersion: list.version });
  };

  // MV-15: a directory that serves an older list than the profile names is withholding a change.
  if (list.version < proof.deviceListVersion) {
    return result(
      "stale",
      "MV-15",
      `The directory serves ${acct}'s device list version ${list.version}, but their profile names version ${proof.deviceListVersion}.`,
      { accountKey },
    );
  }

  // MV-16: every leaf is in the current list (revocations signed by the account key count even while the
  // profile lags behind: revoking can only take trust away).
  for (const [i, cert] of certs.entries()) {
    const listed = findDevice(list, cert.deviceId);
    leaves[i] =
      listed !== undefined && bytesEqual(listed.sigKey, cert.sigKey)
        ? { deviceId: cert.deviceIdText, state: "ok" }
        : { deviceId: cert.deviceIdText, state: "revoked", reason: "not in the current device list" };
  }
  const revoked = leaves.filter((l) => l.state === "revoked").length;
  if (revoked > 0) {
    await recordVersion();
    return result(
      "revoked",
      "MV-16",
      `${revoked === 1 ? "A device" : `${revoked} devices`} of ${acct} ${revoked === 1 ? "is" : "are"} no longer in their device list.`,
      { accountKey },
    );
  }

  // MV-17: a list newer than the profile is signed by the account key but not yet vouched for by the
  // Mastodon account; until the profile catches up, the new devices are not trusted (docs/identity.md I2).
  if (list.version > proof.deviceListVersion) {
    return result(
      "stale",
      "MV-17",
      `${acct}'s device list (version ${list.version}) is newer than their profile says (version ${proof.deviceListVersion}).`,
      { accountKey },
    );
  }

  // MV-18
  await recordVersion();
  const note =
    pin === "rotated" ? " Their account key was rotated, and the old key vouched for the new one." : "";
  if (oob) {
    return result("verified-oob", "MV-18", `${acct} is verified, and you compared safety numbers.${note}`, {
      accountKey,
    });
  }
  return result("verified", "MV-18", `${acct}'s profile, device list and certificates agree.${note}`, {
    accountKey,
  });
}
