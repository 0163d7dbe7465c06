import { decodeMlsMessageStrict, profileClientConfig, sha256 } from "@mastodon-mls/bridge";
import { ProtocolError, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { decodeGroupStateWithoutTree, encodeGroupStateWithoutTree } from "ts-mls/clientState.js";
import { decodeSecretTreeNode } from "ts-mls/secretTree.js";
import { encodeGroupStateCached, encodeSecretTreeNodeCached } from "./stateEncoder.js";
import { decodeGroupState, encodeMlsMessage, type ClientState, type MLSMessage, type Welcome } from "ts-mls";

/** Decodes untrusted MLSMessage bytes: one message, protocol mls10, no trailing bytes (SCR-1). */
export function decodeMessage(bytes: Uint8Array): MLSMessage {
  const msg = decodeMlsMessageStrict(bytes);
  if (msg.version !== "mls10") throw new ProtocolError("invalid_mls_message", "Not MLS 1.0.");
  return msg;
}

export function encodeWelcomeMessage(welcome: Welcome): Uint8Array {
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome });
}

/** base64url SHA-256 of the exact bytes posted: how the hub names the commit that won an epoch. */
export function messageHash(bytes: Uint8Array): string {
  return toBase64url(sha256(bytes));
}

/**
 * Each state object's encoding, once: ts-mls states are immutable (every operation returns a new one, and
 * nothing here changes one in place), and encoding a large group's state took ~110 ms at 512 members —
 * a commit's state used to be encoded for the pending record, again when promoted, again with its
 * invitations, and a record-only change (a status, a cursor) re-encoded an unchanged state.
 */
const encoded = new WeakMap<ClientState, string>();

export function encodeState(state: ClientState): string {
  let text = encoded.get(state);
  if (text === undefined) {
    text = toBase64url(encodeGroupStateCached(state));
    encoded.set(state, text);
  }
  return text;
}

/** The encoding drops `clientConfig` (notes/ts-mls-facts.md): re-attach our profile's on every load. */
export function decodeState(text: string): ClientState {
  const bytes = fromBase64url(text);
  const decoded = decodeGroupState(bytes, 0);
  if (decoded === undefined || decoded[1] !== bytes.byteLength) throw new Error("damaged group state");
  const state = { ...decoded[0], clientConfig: profileClientConfig() };
  // The text it came from is an encoding of it: saving it unchanged needs no new encode.
  encoded.set(state, text);
  return state;
}

/**
 * The part of a state that changes with every message (key schedule, proposals, our path secrets …):
 * the state without its ratchet tree, without the receiver data of past epochs and without its secret
 * tree. Those change only with the epoch (or a late message of a past epoch) and are kept in a separate
 * base snapshot; of the secret tree, a message changes one node (the sender's ratchet — ts-mls copies the
 * array and replaces that node, so the others stay the very same objects), and only the nodes that are
 * not the base's go here (`secretNodes`). At 512 members the whole state is ~3 MB encoded, the delta of a
 * message a few KB (docs: packages/client/README.md "Storage").
 */
export interface StateDelta {
  state: string;
  /** [node index, encoded node] for each secret-tree node that differs from the base's. */
  secretNodes: [number, string][];
}

/** Each state's delta, with the base secret tree it is a delta on (a delta on another base differs). */
const encodedDeltas = new WeakMap<ClientState, { delta: StateDelta; base: ClientState["secretTree"] }>();

/** The secret-tree nodes of `state` that are not `base`'s (by identity: see above). */
export function changedSecretNodes(state: ClientState, base: ClientState["secretTree"]): number[] {
  const tree = state.secretTree;
  if (tree.length !== base.length) return tree.map((_, i) => i);
  const changed: number[] = [];
  for (let i = 0; i < tree.length; i++) if (tree[i] !== base[i]) changed.push(i);
  return changed;
}

export function encodeStateDelta(state: ClientState, base: ClientState["secretTree"]): StateDelta {
  const known = encodedDeltas.get(state);
  let delta = known?.base === base ? known.delta : undefined;
  if (delta === undefined) {
    const rest = { ...state, historicalReceiverData: new Map(), secretTree: [] };
    delta = {
      state: toBase64url(encodeGroupStateWithoutTree(rest)),
      secretNodes: changedSecretNodes(state, base).map((i) => [
        i,
        toBase64url(encodeSecretTreeNodeCached(state.secretTree[i]!)),
      ]),
    };
    encodedDeltas.set(state, { delta, base });
  }
  return delta;
}

/**
 * A delta on its base: the base's tree and past epochs (the same objects), its secret tree with the
 * delta's nodes in place, and the delta's everything else. Without `secretNodes` (files written before
 * they existed), the delta carries the whole secret tree.
 */
export function decodeStateDelta(
  text: string,
  base: ClientState,
  secretNodes?: readonly (readonly [number, string])[],
): ClientState {
  const bytes = fromBase64url(text);
  const decoded = decodeGroupStateWithoutTree(base.ratchetTree)(bytes, 0);
  if (decoded === undefined || decoded[1] !== bytes.byteLength) throw new Error("damaged group state");
  let secretTree = decoded[0].secretTree;
  if (secretNodes === undefined && secretTree.length === 0 && base.secretTree.length !== 0) {
    throw new Error("damaged group state: no secret tree");
  }
  if (secretNodes !== undefined) {
    if (secretTree.length !== 0) throw new Error("damaged group state: two secret trees");
    secretTree = base.secretTree.slice();
    for (const [i, text] of secretNodes) {
      if (!Number.isInteger(i) || i < 0 || i >= secretTree.length) {
        throw new Error("damaged group state: a secret-tree node outside the tree");
      }
      const nodeBytes = fromBase64url(text);
      const node = decodeSecretTreeNode(nodeBytes, 0);
      if (node === undefined || node[1] !== nodeBytes.byteLength) throw new Error("damaged group state");
      secretTree[i] = node[0];
    }
  }
  const state: ClientState = {
    ...decoded[0],
    secretTree,
    ratchetTree: base.ratchetTree,
    historicalReceiverData: base.historicalReceiverData,
    clientConfig: profileClientConfig(),
  };
  if (secretNodes !== undefined) {
    encodedDeltas.set(state, {
      delta: { state: text, secretNodes: secretNodes.map(([i, t]) => [i, t]) },
      base: base.secretTree,
    });
  }
  return state;
}
