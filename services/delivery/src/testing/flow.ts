import { fromBase64url, type InboxItem } from "@mastodon-mls/protocol";
import type { HubClient } from "./client.js";
import type { TestDevice } from "./mls.js";

export type Received = InboxItem & { text?: string };

/**
 * Reads the device's inbox to the end, as a client would: joins from Welcomes, processes other members'
 * messages (its own it already applied), and acknowledges what it processed.
 */
export async function drain(device: TestDevice, client: HubClient, limit = 50): Promise<Received[]> {
  const out: Received[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await client.inbox(after, limit);
    for (const item of page.items) {
      const received: Received = { ...item };
      if (item.kind === "welcome") await device.join(fromBase64url(item.welcome));
      if (item.kind === "message" && item.sender !== device.deviceId) {
        const text = await device.receive(fromBase64url(item.message));
        if (text !== undefined) received.text = text;
      }
      out.push(received);
    }
    const acked = await client.ack(page.cursor);
    if (acked.status !== 200) throw new Error(`ack: ${acked.status} ${JSON.stringify(acked.body)}`);
    if (!page.more) return out;
    after = page.cursor;
  }
}

export function randomGroupId(): { text: string; bytes: Uint8Array } {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return { bytes, text: Buffer.from(bytes).toString("base64url") };
}
