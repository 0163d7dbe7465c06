import type { CiphersuiteImpl, KeyPackage, Welcome } from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decryptGroupInfo, decryptGroupSecrets } from "ts-mls/welcome.js";

/**
 * The leaf that signed a Welcome's GroupInfo: the member whose commit added this device. ts-mls's
 * `joinGroup` checks that signature but does not say whose it is, so the GroupInfo is opened again here
 * (one HPKE decryption). Only meaningful once `joinGroup` has accepted this Welcome. Undefined when the
 * Welcome cannot be opened or carries pre-shared keys (our profile has none: SCR-8).
 */
export async function welcomeSignerLeaf(
  welcome: Welcome,
  keyPackage: KeyPackage,
  initPrivateKey: Uint8Array,
  cs: CiphersuiteImpl,
): Promise<number | undefined> {
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
  return info?.signer;
}
