import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { LIMITS } from "@mastodon-mls/protocol";
import { DIRECTORY_BODY_LIMIT } from "@mastodon-mls/keypackages";

// The files an admin installs from infra/ (README "Self-hosting"), held to what the services do.

const infra = (path: string) => readFileSync(new URL(`../../../infra/${path}`, import.meta.url), "utf8");

/** The directives of a `server { … }` block of the nginx snippet, found by its server_name's host. */
function nginxServer(host: string): string {
  const text = infra("nginx/mastodon-mls.conf");
  const at = text.indexOf(`server_name ${host};`);
  expect(at, host).toBeGreaterThan(0);
  return text.slice(text.lastIndexOf("server {", at), text.indexOf("\n}", at));
}

/** nginx sizes: `4m`, `512k`, or bytes. */
function bytes(size: string): number {
  const unit = { k: 1024, m: 1024 * 1024 }[size.slice(-1).toLowerCase()];
  return unit ? Number(size.slice(0, -1)) * unit : Number(size);
}

function unitSettings(name: string): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of infra(`systemd/${name}`).split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) settings.set(m[1]!, m[2]!);
  }
  return settings;
}

describe("infra/nginx/mastodon-mls.conf", () => {
  it.each([
    ["mls-directory.example.social", DIRECTORY_BODY_LIMIT],
    ["mls-delivery.example.social", LIMITS.bodyBytes],
  ])("lets %s take the largest body the service takes", (host, limit) => {
    const size = /client_max_body_size (\S+);/.exec(nginxServer(host))?.[1];
    expect(bytes(size!)).toBeGreaterThanOrEqual(limit);
  });

  it("uses no directive older nginx releases refuse", () => {
    // `http2 on;` is nginx 1.25.1 and later: Debian 12's nginx (1.22) stops at it (tried: nginx -t).
    expect(infra("nginx/mastodon-mls.conf")).not.toMatch(/^\s*http2 on;/m);
  });

  it("passes the delivery service's WebSocket upgrade (/v1/stream) through, and keeps idle streams", () => {
    const server = nginxServer("mls-delivery.example.social");
    expect(server).toContain("proxy_http_version 1.1;");
    expect(server).toContain("proxy_set_header Upgrade $http_upgrade;");
    expect(server).toMatch(/proxy_set_header Connection \$\w+;/);
    expect(server).toMatch(/proxy_read_timeout \d+[hm];/);
  });
});

describe("infra/systemd", () => {
  it.each([
    ["mastodon-mls-directory.service", "services/keypackages/dist/main.js", "directory.env"],
    ["mastodon-mls-delivery.service", "services/delivery/dist/main.js", "delivery.env"],
  ])(
    "%s runs the built entry point with its environment file, restarting it within limits",
    (name, entry, env) => {
      const unit = unitSettings(name);
      expect(unit.get("ExecStart")).toBe(`/usr/bin/node ${entry}`);
      expect(unit.get("EnvironmentFile")).toBe(`/etc/mastodon-mls/${env}`);
      // The V8 JIT writes executable memory.
      expect(unit.get("MemoryDenyWriteExecute")).toBe("false");
      // A bad configuration exits 1 at once: restarts must run into the start limit, not loop forever.
      const restartSec = Number(unit.get("RestartSec"));
      const interval = Number(unit.get("StartLimitIntervalSec") ?? 10);
      const burst = Number(unit.get("StartLimitBurst") ?? 5);
      expect(unit.get("Restart")).toBe("on-failure");
      expect(burst * restartSec).toBeLessThan(interval);
    },
  );

  it.each(["mastodon-mls-directory.service", "mastodon-mls-delivery.service"])(
    "%s sends SIGTERM to the main process only",
    (name) => {
      // With WORKERS > 1 the main process is a cluster primary that stops its workers itself; systemd's
      // default (control-group) would also signal every worker at once, on top of the primary's SIGTERM.
      expect(unitSettings(name).get("KillMode")).toBe("mixed");
    },
  );
});

describe("infra/redis/mastodon-mls.conf", () => {
  it("persists and never evicts", () => {
    const conf = infra("redis/mastodon-mls.conf");
    expect(conf).toMatch(/^appendonly yes$/m);
    expect(conf).toMatch(/^maxmemory-policy noeviction$/m);
  });
});
