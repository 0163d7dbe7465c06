// The MLS profile and limits every package agrees on (DESIGN §2, §10, §11).

export const CIPHERSUITE_NAME = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" as const;
export const CIPHERSUITE_ID = 0x0001;
/** TLS SignatureScheme ed25519, as carried in the device certificate. */
export const SIGNATURE_SCHEME_ED25519 = 0x0807;

/** Private-use LeafNode extension carrying the device certificate. */
export const DEVICE_CERT_EXTENSION_TYPE = 0xf0a1;
/**
 * Private-use GroupInfo extension of a re-created group's Welcomes: the id (raw bytes) of the group it
 * replaces, signed with the GroupInfo by the member whose commit adds the device (docs/decisions.md D21).
 */
export const REPLACES_EXTENSION_TYPE = 0xf0a2;
/** RFC 9420 last_resort KeyPackage extension. */
export const LAST_RESORT_EXTENSION_TYPE = 0x000a;

export const LABEL_DEVICE_CERT = "mastodon-mls device-cert v1";
export const LABEL_DEVICE_LIST = "mastodon-mls device-list v1";
export const LABEL_PROFILE_PROOF = "mastodon-mls profile-proof v1";
export const LABEL_REQUEST = "mastodon-mls request v1";

export const MAX_KEYPACKAGE_LIFETIME_SECONDS = 90 * 24 * 3600;
/** Past epochs whose keys a client keeps; the hub's application-message window matches it. */
export const RETAIN_EPOCHS = 2;
/** Application messages are padded so their PrivateMessage ciphertext is a multiple of this. */
export const PADDING_BLOCK = 256;

/** Request authentication (DESIGN §7). */
export const AUTH_SCHEME = "MLS-Device";
export const AUTH_MAX_SKEW_SECONDS = 300;
/** Longer than the whole window a timestamp is accepted in (2 × skew), so a nonce cannot outlive its record. */
export const AUTH_NONCE_TTL_SECONDS = 2 * AUTH_MAX_SKEW_SECONDS + 60;

export const DEFAULT_PORTS = { mastodon: 7400, directory: 7401, delivery: 7402 } as const;

export const LIMITS = {
  /** One encoded MLSMessage (a Welcome for a full group is the largest). */
  mlsMessageBytes: 1024 * 1024,
  /** One HTTP body: an MLSMessage and a Welcome, base64url-encoded, plus JSON. */
  bodyBytes: 3 * 1024 * 1024,
  keyPackageBytes: 8 * 1024,
  keyPackagesPerUpload: 100,
  keyPackagesPerDevice: 500,
  accountsPerClaim: 64,
  devicesPerAccount: 16,
  certificateBytes: 2048,
  membersPerGroup: 512,
  /** Proposals accepted in one epoch (SCR-19): each is held by every member until a commit. */
  proposalsPerEpoch: 512,
  groupsPerDevice: 1000,
  inboxPage: 500,
  cleartextBytes: 64 * 1024,
  acctLength: 320,
} as const;
