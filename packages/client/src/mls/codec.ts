import { decodeMlsMessageStrict, profileClientConfig, sha256 } from "@mastodon-mls/bridge";
import { ProtocolError, fromBase64url, toBase64url } from "@mastodon-mls/protocol";
import { decodeGroupStateWithoutTree, encodeGroupStateWithoutTree } from "ts-mls/clientState.js";
import {
  decodeGroupState,
  encodeGroupState,
  encodeMlsMessage,
  type ClientState,
  type MLSMessage,
  type Welcome,
} from "ts-mls";

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
 * nothing here changes one in place), and encoding a large group's state costs ~110 ms at 512 members —
 * a commit's state used to be encoded for the pending record, again when promoted, again with its
 * invitations, and a record-only change (a status, a cursor) re-encoded an unchanged state.
 */
const encoded = new WeakMap<ClientState, string>();

export function encodeState(state: ClientState): string {
  let text = encoded.get(state);
  if (text === undefined) {
    text = toBase64url(encodeGroupState(state));
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
 * The part of a state that changes with every message (secret tree, key schedule, proposals …): the
 * state without its ratchet tree and without the receiver data of past epochs — at 512 members about a
 * tenth of the whole. The rest changes only with the epoch (or a late message of a past epoch) and is kept
 * in a separate base snapshot (docs: packages/client/README.md "Storage").
 */
const encodedDeltas = new WeakMap<ClientState, string>();

export function encodeStateDelta(state: ClientState): string {
  let text = encodedDeltas.get(state);
  if (text === undefined) {
    text = toBase64url(encodeGroupStateWithoutTree({ ...state, historicalReceiverData: new Map() }));
    encodedDeltas.set(state, text);
  }
  return text;
}

/** A delta on its base: the base's tree and past epochs (the same objects), the delta's everything else. */
export function decodeStateDelta(text: string, base: ClientState): ClientState {
  const bytes = fromBase64url(text);
  const decoded = decodeGroupStateWithoutTree(base.ratchetTree)(bytes, 0);
  if (decoded === undefined || decoded[1] !== bytes.byteLength) throw new Error("damaged group state");
  const state: ClientState = {
    ...decoded[0],
    ratchetTree: base.ratchetTree,
    historicalReceiverData: base.historicalReceiverData,
    clientConfig: profileClientConfig(),
  };
  encodedDeltas.set(state, text);
  return state;
}
