import type { CiphersuiteImpl, Extension, KeyPackage, Welcome } from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decryptGroupInfo, decryptGroupSecrets } from "ts-mls/welcome.js";

/** What a Welcome's GroupInfo says beyond what ts-mls's `joinGroup` returns. */
export interface WelcomeInfo {
  /** The leaf that signed the GroupInfo: the member whose commit added this device. */
  signer: number;
  /** The GroupInfo's extensions, signed with it. */
  extensions: Extension[];
}

/**
 * Opens a Welcome's GroupInfo again (one HPKE decryption): ts-mls's `joinGroup` checks its signature and
 * confirmation tag but does not say whose signature it is, nor hand back its extensions. Only meaningful
 * once `joinGroup` has accepted this very Welcome (the same decryption then gives the same GroupInfo).
 * Undefined when it cannot be opened or carries pre-shared keys (our profile has none: SCR-8).
 */
export async function openWelcomeInfo(
  welcome: Welcome,
  keyPackage: KeyPackage,
  initPrivateKey: Uint8Array,
  cs: CiphersuiteImpl,
): Promise<WelcomeInfo | undefined> {
  const ref = await makeKeyPackageRef(keyPackage, cs.hash);
  const secrets = await decryptGroupSecrets(
    await cs.hpke.importPrivateKey(initPrivateKey),
    ref,
    welcome,
    cs.hpke,
  );
  if (secrets === undefined || secrets.psks.length > 0) return undefined;
  // Without pre-shared keys the PSK secret is all zeros (RFC 9420 §8.4).
  const info = await decryptGroupInfo(welcome, secrets.joinerSecret, new Uint8Array(cs.kdf.size), cs);
  return info === undefined ? undefined : { signer: info.signer, extensions: info.extensions };
}
