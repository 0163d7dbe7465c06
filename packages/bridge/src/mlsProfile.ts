import {
  CIPHERSUITE_NAME,
  DEVICE_CERT_EXTENSION_TYPE,
  LAST_RESORT_EXTENSION_TYPE,
  MAX_KEYPACKAGE_LIFETIME_SECONDS,
  PADDING_BLOCK,
  RETAIN_EPOCHS,
  parseCanonicalIdentity,
} from "@mastodon-mls/protocol";
import {
  defaultKeyPackageEqualityConfig,
  defaultKeyRetentionConfig,
  type Capabilities,
  type ClientConfig,
  type Credential,
} from "ts-mls";

// DESIGN §2, in code: what every client of ours puts in its leaves and how it configures ts-mls.

/** Our leaves list the certificate and last-resort extensions; nothing is put in required_capabilities. */
export function profileCapabilities(): Capabilities {
  return {
    versions: ["mls10"],
    ciphersuites: [CIPHERSUITE_NAME],
    extensions: [DEVICE_CERT_EXTENSION_TYPE, LAST_RESORT_EXTENSION_TYPE],
    proposals: [],
    credentials: ["basic"],
  };
}

export function basicCredential(identity: string): Credential {
  return { credentialType: "basic", identity: new TextEncoder().encode(identity) };
}

/** The identity of a basic credential, or undefined for anything else or a non-canonical acct. */
export function credentialIdentity(credential: Credential): string | undefined {
  if (credential.credentialType !== "basic") return undefined;
  try {
    // ignoreBOM: a leading U+FEFF stays and then fails the canonical-form check.
    const identity = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(credential.identity);
    parseCanonicalIdentity(identity);
    return identity;
  } catch {
    return undefined;
  }
}

/**
 * Syntax only (DESIGN §2): ts-mls sees no extensions here, and a network call would fork the group
 * whenever an instance is down. Certificates are checked offline after every Welcome and commit.
 */
export const profileAuthService = {
  validateCredential(credential: Credential, signaturePublicKey: Uint8Array): Promise<boolean> {
    return Promise.resolve(
      credentialIdentity(credential) !== undefined && signaturePublicKey.byteLength === 32,
    );
  },
};

/** Pads each application message's content to the next multiple of PADDING_BLOCK bytes. */
export function paddingFor(plaintextBytes: number): { kind: "padUntilLength"; padUntilLength: number } {
  return {
    kind: "padUntilLength",
    padUntilLength: Math.ceil((plaintextBytes + 1) / PADDING_BLOCK) * PADDING_BLOCK,
  };
}

export function profileClientConfig(padding = paddingFor(0)): ClientConfig {
  return {
    keyRetentionConfig: { ...defaultKeyRetentionConfig, retainKeysForEpochs: RETAIN_EPOCHS },
    // Lifetimes are checked by our own code on every Add (verifyKeyPackage); receivers would otherwise
    // refuse a group whose oldest, never-updated leaf has expired.
    lifetimeConfig: {
      maximumTotalLifetime: BigInt(MAX_KEYPACKAGE_LIFETIME_SECONDS),
      validateLifetimeOnReceive: false,
    },
    keyPackageEqualityConfig: defaultKeyPackageEqualityConfig,
    paddingConfig: padding,
    authService: profileAuthService,
  };
}
