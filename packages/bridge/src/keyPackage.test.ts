import { describe, expect, it } from "vitest";
import { ProtocolError, LAST_RESORT_EXTENSION_TYPE } from "@mastodon-mls/protocol";
import { encodeMlsMessage } from "ts-mls";
import { generateSigningKeyPair } from "./crypto.js";
import { signDeviceCertificate } from "./deviceCertificate.js";
import {
  decodeKeyPackageMessage,
  generateDeviceKeyPackage,
  parseKeyPackage,
  verifyKeyPackage,
} from "./keyPackage.js";

const NOW = Math.floor(Date.now() / 1000);

async function setup(identity = "acct:bob@b.test") {
  const account = await generateSigningKeyPair();
  const dev = await generateSigningKeyPair();
  const certificate = await signDeviceCertificate(
    {
      identity,
      accountKey: account.publicKey,
      sigKey: dev.publicKey,
      notBefore: NOW - 60,
      notAfter: NOW + 86400 * 30,
    },
    account.signKey,
  );
  return { account, dev, certificate };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

describe("device KeyPackages", () => {
  it("carry a certificate that verifies, and the last-resort marker", async () => {
    const { dev, certificate } = await setup();
    const kp = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: dev,
      certificate,
    });
    const v = await parseKeyPackage(kp.encoded);
    expect(v.acct).toBe("bob@b.test");
    expect(v.lastResort).toBe(false);
    expect(v.ref).toBe(kp.ref);
    const lr = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: dev,
      certificate,
      lastResort: true,
    });
    expect((await parseKeyPackage(lr.encoded)).lastResort).toBe(true);
  });

  it("refuses a certificate for another key (a directory's own key)", async () => {
    const { certificate } = await setup();
    const rogue = await generateSigningKeyPair();
    const kp = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: rogue,
      certificate,
    });
    await expect(code(parseKeyPackage(kp.encoded))).resolves.toBe("invalid_certificate");
  });

  it("refuses a certificate for another acct", async () => {
    const { dev, certificate } = await setup("acct:mallory@b.test");
    const kp = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: dev,
      certificate,
    });
    await expect(code(parseKeyPackage(kp.encoded))).resolves.toBe("invalid_certificate");
  });

  it("refuses expired KeyPackages, trailing bytes and garbage", async () => {
    const { dev, certificate } = await setup();
    const kp = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: dev,
      certificate,
      lifetimeSeconds: 3600,
    });
    await expect(code(parseKeyPackage(kp.encoded, NOW + 7200))).resolves.toBe("lifetime_invalid");
    expect(() => decodeKeyPackageMessage(Uint8Array.from([...kp.encoded, 0]))).toThrow(/trailing/i);
    expect(() => decodeKeyPackageMessage(kp.encoded.subarray(0, 40))).toThrow(ProtocolError);
    expect(() => decodeKeyPackageMessage(new Uint8Array(64).fill(7))).toThrow(ProtocolError);
  });

  it("refuses a tampered KeyPackage signature", async () => {
    const { dev, certificate } = await setup();
    const kp = await generateDeviceKeyPackage({
      identity: "acct:bob@b.test",
      signatureKeyPair: dev,
      certificate,
    });
    const tampered = {
      ...kp.publicPackage,
      extensions: [{ extensionType: LAST_RESORT_EXTENSION_TYPE, extensionData: new Uint8Array(0) }],
    };
    const bytes = encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: tampered });
    await expect(code(verifyKeyPackage(decodeKeyPackageMessage(bytes)))).resolves.toBe("invalid_signature");
  });
});
