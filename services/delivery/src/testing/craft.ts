import { randomBytes as nodeRandomBytes } from "node:crypto";
import { decodeMlsMessageStrict } from "@mastodon-mls/bridge";
import { encodeMlsMessage, type Commit, type PublicMessage } from "ts-mls";

// Hand-made variants of real messages, for screening tests. They are only ever sent to the hub:
// ts-mls must never process them in this process (a Remove of a missing leaf aborts it).

/** A PublicMessage MLSMessage with `mutate` applied, re-encoded. Signatures no longer verify. */
export function craftPublic(bytes: Uint8Array, mutate: (pm: PublicMessage) => void): Uint8Array {
  const msg = decodeMlsMessageStrict(bytes);
  if (msg.wireformat !== "mls_public_message") throw new Error("not a PublicMessage");
  const copy = structuredClone(msg);
  mutate(copy.publicMessage);
  return encodeMlsMessage(copy);
}

/** The same, for the commit inside. */
export function craftCommit(bytes: Uint8Array, mutate: (c: Commit) => void): Uint8Array {
  return craftPublic(bytes, (pm) => {
    if (pm.content.contentType !== "commit") throw new Error("not a commit");
    mutate(pm.content.commit);
  });
}

/**
 * An application message the hub screens as such (real framing: group id, epoch, content type) around a
 * random ciphertext of `size` bytes. No member could decrypt it; the hub never tries.
 */
export function privateMessage(groupId: Uint8Array, epoch: bigint, size: number): Uint8Array {
  return encodeMlsMessage({
    version: "mls10",
    wireformat: "mls_private_message",
    privateMessage: {
      groupId,
      epoch,
      contentType: "application",
      authenticatedData: new Uint8Array(0),
      encryptedSenderData: randomBytes(48),
      ciphertext: randomBytes(size),
    },
  });
}

function randomBytes(n: number): Uint8Array {
  return new Uint8Array(nodeRandomBytes(n));
}
