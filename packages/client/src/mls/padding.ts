import { paddingFor } from "@mastodon-mls/bridge";
import type { PaddingConfig } from "ts-mls";

/** An application message's content as ts-mls pads it: application_data<V> then signature<V>: a 64-byte
 * Ed25519 signature behind a 2-byte length (64 does not fit the 1-byte varint form, which stops at 63). */
const SIGNATURE_FIELD_BYTES = 2 + 64;

function varintLength(n: number): number {
  return n < 0x40 ? 1 : n < 0x4000 ? 2 : 4;
}

/**
 * DESIGN §2: application messages are padded so their encrypted content is a multiple of 256 bytes.
 * ts-mls pads the encoded content (data, signature) up to a target length, so the target is computed from
 * that encoded length. `paddingFor(n)` gives the next multiple above n, hence the `- 1`.
 */
export function applicationPadding(plaintextBytes: number): PaddingConfig {
  const encoded = varintLength(plaintextBytes) + plaintextBytes + SIGNATURE_FIELD_BYTES;
  return paddingFor(encoded - 1);
}
