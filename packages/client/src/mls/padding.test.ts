import { cipherSuite, profileClientConfig } from "@mastodon-mls/bridge";
import { acceptAll, createApplicationMessage, emptyPskIndex, processMessage } from "ts-mls";
import { describe, expect, it } from "vitest";
import { twoMemberGroup } from "../testSupport/localDevices.js";
import { applicationPadding } from "./padding.js";

describe("applicationPadding", () => {
  it("pads every application message's encrypted content to a multiple of 256 bytes, and it still decrypts", async () => {
    const cs = await cipherSuite();
    let { alice, bob } = await twoMemberGroup();
    const AEAD_TAG = 16;
    for (const size of [0, 1, 100, 187, 188, 189, 190, 255, 256, 1000, 5000]) {
      const text = new Uint8Array(size).fill(0x61);
      const padded = {
        ...alice,
        clientConfig: { ...profileClientConfig(), paddingConfig: applicationPadding(size) },
      };
      const sent = await createApplicationMessage(padded, text, cs);
      alice = sent.newState;
      const contentBytes = sent.privateMessage.ciphertext.byteLength - AEAD_TAG;
      expect(contentBytes % 256, `size ${size}`).toBe(0);
      expect(contentBytes, `size ${size}`).toBeLessThan(size + 256 + 80);
      const got = await processMessage(
        { wireformat: "mls_private_message", privateMessage: sent.privateMessage },
        bob,
        emptyPskIndex,
        acceptAll,
        cs,
      );
      bob = got.newState;
      expect(got.kind === "applicationMessage" && got.message.byteLength).toBe(size);
    }
  });
});
