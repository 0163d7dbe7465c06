import { z } from "zod";
import { CIPHERSUITE_ID, LIMITS } from "./constants.js";
import { KeyRotations } from "./identity.js";
import { AcctText, DeviceId, b64url } from "./schemas.js";

// Wire shapes of the key-package directory (DESIGN §5, §11). MLS bytes travel as base64url.

/** PUT /v1/devices/:deviceId — bearer token; the certificate is signed by the account key. */
export const RegisterDeviceBody = z.object({ certificate: b64url(LIMITS.certificateBytes) });
export type RegisterDeviceBody = z.infer<typeof RegisterDeviceBody>;
export const RegisterDeviceResponse = z.object({ acct: AcctText, device_id: DeviceId });
export type RegisterDeviceResponse = z.infer<typeof RegisterDeviceResponse>;

/** POST /v1/devices/:deviceId/keypackages — bearer token. Each entry is an MLSMessage(KeyPackage). */
export const UploadKeyPackagesBody = z.object({
  key_packages: z.array(b64url(LIMITS.keyPackageBytes)).max(LIMITS.keyPackagesPerUpload),
  last_resort: b64url(LIMITS.keyPackageBytes).optional(),
});
export type UploadKeyPackagesBody = z.infer<typeof UploadKeyPackagesBody>;
export const KeyPackageCount = z.object({
  count: z.number().int().nonnegative(),
  last_resort: z.boolean(),
});
export type KeyPackageCount = z.infer<typeof KeyPackageCount>;
export const UploadKeyPackagesResponse = KeyPackageCount.extend({ stored: z.number().int().nonnegative() });
export type UploadKeyPackagesResponse = z.infer<typeof UploadKeyPackagesResponse>;

/**
 * GET /v1/accounts/:acct/devices — public. `device_list`: the account's current signed device list
 * (docs/identity.md §2.2), null while it has published none; `key_rotations`: its account-key continuity
 * statements (§2.4), oldest first.
 */
export const AccountDevices = z.object({
  acct: AcctText,
  device_list: b64url(64 * 1024).nullable(),
  devices: z.array(z.object({ device_id: DeviceId, certificate: b64url(LIMITS.certificateBytes) })),
  key_rotations: KeyRotations,
});
export type AccountDevices = z.infer<typeof AccountDevices>;

/**
 * PUT /v1/accounts/:acct/device-list (body `PutDeviceListBody`, identity.ts) — the version now stored,
 * and the devices whose registrations (and KeyPackages) the new list removed: those not in it, or
 * certified by a key it no longer links to.
 */
export const PutDeviceListResponse = z.object({
  acct: AcctText,
  version: z.number().int().positive(),
  removed: z.array(DeviceId),
});
export type PutDeviceListResponse = z.infer<typeof PutDeviceListResponse>;

/** POST /v1/claims — device-signed. One KeyPackage per device of each named account. */
export const ClaimBody = z.object({
  ciphersuite: z.literal(CIPHERSUITE_ID),
  accounts: z.array(AcctText).min(1).max(LIMITS.accountsPerClaim),
  /**
   * Names one intent of the requester (e.g. "add these people to this group"). Repeating a claim with the
   * same id within 10 minutes returns the same KeyPackages, so a retry after a lost answer or a lost commit
   * race drains nothing; a claim without an id, or with a new one, always gets fresh KeyPackages. See
   * docs/decisions.md (D1): keying repeats by requester alone handed one KeyPackage to two groups.
   */
  claim_id: z
    .string()
    .regex(/^[A-Za-z0-9_-]{16,64}$/, "must be 16 to 64 base64url characters")
    .optional(),
});
export type ClaimBody = z.infer<typeof ClaimBody>;
export const ClaimedKeyPackage = z.object({
  device_id: DeviceId,
  key_package: b64url(LIMITS.keyPackageBytes),
  last_resort: z.boolean(),
});
export type ClaimedKeyPackage = z.infer<typeof ClaimedKeyPackage>;
export const ClaimResult = z.object({
  acct: AcctText,
  /** ok: one KeyPackage per device below; no_devices: the account registered none; foreign: not this instance's. */
  status: z.enum(["ok", "no_devices", "foreign"]),
  key_packages: z.array(ClaimedKeyPackage),
  /** Devices that had nothing left, not even a last-resort KeyPackage. */
  exhausted: z.array(DeviceId),
});
export type ClaimResult = z.infer<typeof ClaimResult>;
export const ClaimResponse = z.object({ accounts: z.array(ClaimResult) });
export type ClaimResponse = z.infer<typeof ClaimResponse>;

/** The ActivityStreams 2.0 context, and the one of the SWICG "MLS over ActivityPub" draft. */
export const ACTIVITYSTREAMS_CONTEXT = "https://www.w3.org/ns/activitystreams";
export const MLS_ACTIVITYPUB_CONTEXT = "https://purl.archive.org/socialweb/mls";
/** The media type of ActivityStreams documents (`Accept` and `Content-Type`). */
export const ACTIVITY_JSON = "application/activity+json";

/**
 * One device in an account's `keyPackages` collection: a `KeyPackage` object without `content`. The
 * bytes are never published here — each single-use KeyPackage is handed out once, by a claim — so the
 * object links to the claim endpoint instead (docs/decisions.md, D3).
 */
export const KeyPackageCollectionItem = z.object({
  /** `<collection id>#<device id>` */
  id: z.string().url(),
  type: z.literal("KeyPackage"),
  /** `acct:user@domain` */
  attributedTo: z.string().max(LIMITS.acctLength + 5),
  mediaType: z.literal("message/mls"),
  /** The device id. */
  name: DeviceId,
  /** Where this device's KeyPackages are claimed: `POST` with a device signature. */
  url: z.object({
    type: z.literal("Link"),
    href: z.string().url(),
    mediaType: z.literal("application/json"),
  }),
});
export type KeyPackageCollectionItem = z.infer<typeof KeyPackageCollectionItem>;

/**
 * GET /v1/accounts/:acct/keypackages with `Accept: application/activity+json` — public, read-only: the
 * account's `keyPackages` collection in the shape of the SWICG "MLS over ActivityPub" draft, one item
 * per registered device. Reading it hands out and consumes nothing.
 */
export const KeyPackageCollection = z.object({
  "@context": z.tuple([z.literal(ACTIVITYSTREAMS_CONTEXT), z.literal(MLS_ACTIVITYPUB_CONTEXT)]),
  id: z.string().url(),
  type: z.literal("Collection"),
  attributedTo: z.string().max(LIMITS.acctLength + 5),
  summary: z.string(),
  totalItems: z.number().int().nonnegative(),
  items: z.array(KeyPackageCollectionItem).max(LIMITS.devicesPerAccount),
});
export type KeyPackageCollection = z.infer<typeof KeyPackageCollection>;
