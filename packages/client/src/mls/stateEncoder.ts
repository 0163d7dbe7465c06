import type { ClientState } from "ts-mls";
import { contramapBufferEncoders, encode, type BufferEncoder } from "ts-mls/codec/tlsEncoder.js";
import { bigintMapEncoder, lengthEncoder, varLenDataEncoder } from "ts-mls/codec/variableLength.js";
import type { EpochReceiverData } from "ts-mls/epochReceiverData.js";
import { groupActiveStateEncoder } from "ts-mls/groupActiveState.js";
import { groupContextEncoder } from "ts-mls/groupContext.js";
import { keyScheduleEncoder } from "ts-mls/keySchedule.js";
import { privateKeyPathEncoder } from "ts-mls/privateKeyPath.js";
import { nodeEncoder } from "ts-mls/ratchetTree.js";
import { secretTreeNodeEncoder } from "ts-mls/secretTree.js";
import { unappliedProposalsEncoder } from "ts-mls/unappliedProposals.js";

// `encodeGroupState` of ts-mls 1.6.4, byte for byte (stateEncoder.test.ts checks it), but faster where a
// large group's state is large: its trees. ts-mls encodes a vector through one closure per element, chained,
// and re-encodes every node of the ratchet tree and secret tree — also inside each past epoch kept — each
// time. A commit changes few nodes (ts-mls copies the arrays and replaces the nodes it changes; the other
// nodes stay the very same objects, and a past epoch's trees are the state's trees of that epoch), so each
// node's encoding is kept per node object and a tree is written as one flat copy of those. ts-mls states
// are values (codec.ts): a node object never changes once made. At 512 members a commit's state was
// ~100 ms of CPU to encode, now ~15 (bench:client).

type Tree = ClientState["ratchetTree"];
type SecretTree = ClientState["secretTree"];
type Write = (offset: number, buffer: ArrayBuffer) => void;

const nodeBytes = new WeakMap<object, Uint8Array>();
const encodeNode = encode(nodeEncoder);
const encodeSecretNode = encode(secretTreeNodeEncoder);

/** One encoding per node object (ratchet-tree and secret-tree nodes alike). */
function cached<T extends object>(item: T, one: (item: T) => Uint8Array): Uint8Array {
  let bytes = nodeBytes.get(item);
  if (bytes === undefined) {
    bytes = one(item);
    nodeBytes.set(item, bytes);
  }
  return bytes;
}

/** ts-mls's encoding of one secret-tree node (group.json lists the nodes a message moved). */
export function encodeSecretTreeNodeCached(node: SecretTree[number]): Uint8Array {
  return cached(node, encodeSecretNode);
}

/** A TLS vector of the elements' cached encodings; `optional` prefixes each with its presence byte. */
function cachedVector<T extends object>(
  items: readonly (T | undefined)[],
  one: (item: T) => Uint8Array,
  optional: boolean,
): [number, Write] {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const item of items) {
    if (item === undefined) {
      if (!optional) throw new Error("a blank node in a vector of nodes");
      parts.push(ABSENT);
      total += 1;
      continue;
    }
    const bytes = cached(item, one);
    if (optional) {
      parts.push(PRESENT);
      total += 1;
    }
    parts.push(bytes);
    total += bytes.byteLength;
  }
  const [headerLength, writeLength] = lengthEncoder(total);
  return [
    headerLength + total,
    (offset, buffer) => {
      writeLength(offset, buffer);
      const view = new Uint8Array(buffer);
      let at = offset + headerLength;
      for (const p of parts) {
        view.set(p, at);
        at += p.byteLength;
      }
    },
  ];
}

const ABSENT = new Uint8Array([0]);
const PRESENT = new Uint8Array([1]);

/** ts-mls's ratchetTreeEncoder: trailing blank nodes dropped, each node optional. */
const ratchetTreeEncoder: BufferEncoder<Tree> = (tree) => {
  let last = tree.length - 1;
  while (last >= 0 && tree[last] === undefined) last--;
  return cachedVector(tree.slice(0, last + 1), encodeNode, true);
};

const secretTreeEncoder: BufferEncoder<SecretTree> = (tree) => cachedVector(tree, encodeSecretNode, false);

const epochReceiverDataEncoder = contramapBufferEncoders(
  [varLenDataEncoder, secretTreeEncoder, ratchetTreeEncoder, varLenDataEncoder, groupContextEncoder],
  (e: EpochReceiverData) =>
    [e.resumptionPsk, e.secretTree, e.ratchetTree, e.senderDataSecret, e.groupContext] as const,
);

const groupStateEncoder = contramapBufferEncoders(
  [
    groupContextEncoder,
    keyScheduleEncoder,
    secretTreeEncoder,
    ratchetTreeEncoder,
    privateKeyPathEncoder,
    varLenDataEncoder,
    unappliedProposalsEncoder,
    varLenDataEncoder,
    bigintMapEncoder(epochReceiverDataEncoder),
    groupActiveStateEncoder,
  ],
  (s: ClientState) =>
    [
      s.groupContext,
      s.keySchedule,
      s.secretTree,
      s.ratchetTree,
      s.privatePath,
      s.signaturePrivateKey,
      s.unappliedProposals,
      s.confirmationTag,
      s.historicalReceiverData,
      s.groupActiveState,
    ] as const,
);

/** The bytes ts-mls's `encodeGroupState(state)` gives. */
export const encodeGroupStateCached = encode(groupStateEncoder);
