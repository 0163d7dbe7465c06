import { BlockList, isIP } from "node:net";

// Which IP addresses a lookup may connect to (rule NET-3 in docs/identity.md). A lookup is made on behalf
// of whoever names an acct, services included, so in production it must never reach the service's own
// network: private, loopback, link-local, CGNAT, unique-local and other special-purpose ranges.

export type AddressClass = "public" | "loopback" | "private" | "link-local" | "special";

function blockList(ranges: ReadonlyArray<readonly [string, number]>, family: "ipv4" | "ipv6"): BlockList {
  const list = new BlockList();
  for (const [net, prefix] of ranges) list.addSubnet(net, prefix, family);
  return list;
}

const LOOPBACK = blockList([["127.0.0.0", 8]], "ipv4");
const LOOPBACK6 = blockList([["::1", 128]], "ipv6");
const LINK_LOCAL = blockList([["169.254.0.0", 16]], "ipv4");
const LINK_LOCAL6 = blockList([["fe80::", 10]], "ipv6");
const PRIVATE = blockList(
  [
    ["10.0.0.0", 8],
    ["172.16.0.0", 12],
    ["192.168.0.0", 16],
    ["100.64.0.0", 10], // CGNAT (RFC 6598)
  ],
  "ipv4",
);
const PRIVATE6 = blockList(
  [
    ["fc00::", 7], // unique-local (RFC 4193)
    ["fec0::", 10], // deprecated site-local
  ],
  "ipv6",
);
const SPECIAL = blockList(
  [
    ["0.0.0.0", 8],
    ["192.0.0.0", 24],
    ["192.0.2.0", 24],
    ["198.18.0.0", 15],
    ["198.51.100.0", 24],
    ["203.0.113.0", 24],
    ["224.0.0.0", 4],
    ["240.0.0.0", 4],
  ],
  "ipv4",
);
const SPECIAL6 = blockList(
  [
    ["::", 128],
    // IPv4-compatible (`::10.0.0.1`, deprecated by RFC 4291): embeds an IPv4 address, like those below.
    ["::", 96],
    ["100::", 64],
    ["2001:db8::", 32],
    ["ff00::", 8],
    // Prefixes that embed an IPv4 address whose class we would have to re-check: refused outright.
    ["64:ff9b::", 96],
    ["64:ff9b:1::", 48],
    ["2002::", 16],
    ["2001::", 32],
  ],
  "ipv6",
);

/** IPv4-mapped IPv6 (`::ffff:10.0.0.1`, also in hex form) is classified as the IPv4 address it maps. */
function mappedIpv4(address: string): string | undefined {
  const m = /^::ffff:(?:0:)?(.+)$/i.exec(address);
  if (m === null) return undefined;
  const rest = m[1]!;
  if (isIP(rest) === 4) return rest;
  const hex = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(rest);
  if (hex === null) return undefined;
  const hi = parseInt(hex[1]!, 16);
  const lo = parseInt(hex[2]!, 16);
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

export function classifyAddress(address: string): AddressClass {
  const family = isIP(address);
  if (family === 4) {
    if (LOOPBACK.check(address, "ipv4")) return "loopback";
    if (LINK_LOCAL.check(address, "ipv4")) return "link-local";
    if (PRIVATE.check(address, "ipv4")) return "private";
    if (SPECIAL.check(address, "ipv4")) return "special";
    return "public";
  }
  if (family === 6) {
    const v4 = mappedIpv4(address);
    if (v4 !== undefined) return classifyAddress(v4);
    if (/^::ffff:/i.test(address)) return "special";
    if (LOOPBACK6.check(address, "ipv6")) return "loopback";
    if (LINK_LOCAL6.check(address, "ipv6")) return "link-local";
    if (PRIVATE6.check(address, "ipv6")) return "private";
    if (SPECIAL6.check(address, "ipv6")) return "special";
    return "public";
  }
  return "special";
}
