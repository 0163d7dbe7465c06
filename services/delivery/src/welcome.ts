import { CIPHERSUITE_NAME, ProtocolError, toBase64url } from "@mastodon-mls/protocol";
import { decodeMlsMessageStrict, type VerifiedKeyPackage } from "@mastodon-mls/bridge";

/**
 * The Welcome that travels with a commit (hub rules, after screening):
 *
 *   WEL-1  a Welcome only with a commit that adds someone, and never with a proposal or application message;
 *   WEL-2  a commit that adds members carries their Welcome;
 *   WEL-3  it is one MLSMessage Welcome, protocol mls10, of our ciphersuite, without trailing bytes;
 *   WEL-4  its secrets name exactly the KeyPackageRefs of the commit's Adds, each once. The hub queues it
 *          for those devices only, so no one else learns it and no added device is left without it.
 */
export function checkWelcome(
  bytes: Uint8Array | undefined,
  adds: readonly VerifiedKeyPackage[],
): Uint8Array | undefined {
  const refuse = (rule: string, why: string) => new ProtocolError("screening_failed", `${rule}: ${why}.`);
  if (adds.length === 0) {
    if (bytes !== undefined) throw refuse("WEL-1", "a Welcome may only come with a commit that adds members");
    return undefined;
  }
  if (bytes === undefined) throw refuse("WEL-2", "a commit that adds members must carry their Welcome");
  let msg;
  try {
    msg = decodeMlsMessageStrict(bytes);
  } catch (e) {
    throw refuse(
      "WEL-3",
      `the Welcome is not a well-formed MLSMessage (${e instanceof Error ? e.message : "?"})`,
    );
  }
  if (msg.version !== "mls10" || msg.wireformat !== "mls_welcome")
    throw refuse("WEL-3", "the welcome is not a Welcome");
  if (msg.welcome.cipherSuite !== CIPHERSUITE_NAME)
    throw refuse("WEL-3", "the Welcome is for another ciphersuite");
  const expected = new Set(adds.map((a) => a.ref));
  const named = new Set<string>();
  for (const secret of msg.welcome.secrets) {
    const ref = toBase64url(secret.newMember);
    if (!expected.has(ref)) throw refuse("WEL-4", "the Welcome names a KeyPackage this commit does not add");
    if (named.has(ref)) throw refuse("WEL-4", "the Welcome names a KeyPackage twice");
    named.add(ref);
  }
  if (named.size !== expected.size) throw refuse("WEL-4", "the Welcome leaves out an added KeyPackage");
  return bytes;
}
