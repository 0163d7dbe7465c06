import { describe, expect, it } from "vitest";
import type { DeviceContext } from "../context.js";
import type { DmEvent } from "../events.js";
import { processInboxItems } from "./inbox.js";

// An invitation is a stranger's word: the hub it names is polled from then on. In production (the
// services found by /.well-known, no development map) a hub on this machine or a private network is
// refused, so a stranger cannot make the device send requests to services next to it (found by an audit).

function fakeCtx(insecureLoopback: boolean, configured?: (url: string) => boolean) {
  const events: DmEvent[] = [];
  const remembered: string[] = [];
  const ctx = {
    groups: new Map(),
    device: { blocked: [] },
    home: { delivery: { baseUrl: "https://home.example" } },
    resolver: { resolve: () => Promise.reject(new Error("unused")), insecureLoopback, configured },
    emit: (e: DmEvent) => events.push(e),
    rememberHub: async (hub: string) => {
      remembered.push(hub);
      return true;
    },
    saveCursor: async () => undefined,
  } as unknown as DeviceContext;
  return { ctx, events, remembered };
}

const invitation = (hub: string) => ({
  kind: "invitation" as const,
  from: "mallory@evil.example",
  from_device: "A".repeat(43),
  hub,
  group_id: "AAAAAAAAAAAAAAAAAAAAAA",
  cursor: "1",
});

describe("the hub an invitation names", () => {
  it("in production: a public https hub is polled; loopback, private and link-local ones are refused", async () => {
    const { ctx, events, remembered } = fakeCtx(false);
    const items = [
      invitation("https://hub.example.social"),
      invitation("http://127.0.0.1:6379"),
      invitation("https://10.1.2.3"),
      invitation("https://169.254.169.254"),
    ];
    await processInboxItems(ctx, "https://home.example", items, "4");
    expect(remembered).toEqual(["https://hub.example.social"]);
    expect(events.filter((e) => e.type === "invitation")).toHaveLength(1);
    expect(events.filter((e) => e.type === "error")).toHaveLength(3);
  });

  it("with development services, a loopback hub is polled as before", async () => {
    const { ctx, remembered } = fakeCtx(true);
    await processInboxItems(ctx, "http://127.0.0.1:7402", [invitation("http://127.0.0.1:7999")], "1");
    expect(remembered).toEqual(["http://127.0.0.1:7999"]);
  });

  it("in production, the device's own home and hubs the person configured are polled wherever they are (NET-7)", async () => {
    const { ctx, events, remembered } = fakeCtx(false, (url) => url === "https://10.1.2.3");
    const items = [
      invitation("https://10.1.2.3/"),
      invitation("https://home.example"),
      invitation("https://10.1.2.4"),
    ];
    await processInboxItems(ctx, "https://home.example", items, "3");
    expect(remembered).toEqual(["https://10.1.2.3", "https://home.example"]);
    expect(events.filter((e) => e.type === "error").map((e) => e.type === "error" && e.message)).toEqual([
      expect.stringContaining("https://10.1.2.4"),
    ]);
  });
});
