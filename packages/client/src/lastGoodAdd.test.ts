import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlsDmClient } from "./client.js";
import { FAST_RETRY, newClient, useProxiedDirectory } from "./testSupport/instances.js";
import { settle } from "./testSupport/settle.js";

// D8: an add looks up afresh. While the member's instance does not answer, the lookup gives the last
// good profile (ST-3, up to 24 h old); the add took it as fresh, so a directory replaying the list of that
// time got a device revoked since added (found by an audit). It now counts as `unreachable` for adding.

const env = useProxiedDirectory();
const { proxy } = env;
let replay: { devices: unknown; claim: unknown } | undefined;

beforeAll(() => {
  proxy.intercept = (req) => {
    if (replay === undefined) return undefined;
    if (req.method === "GET" && /^\/v1\/accounts\/bob(%40|@)b\.test\/devices$/.test(req.path)) {
      return { status: 200, body: replay.devices };
    }
    if (req.method === "POST" && req.path === "/v1/claims") return { status: 200, body: replay.claim };
    return undefined;
  };
});

afterAll(() => env.b?.mastodon.fault("none"));

describe("adding while the member's instance does not answer", () => {
  it("does not add a device on the last good (old) profile", { timeout: 120_000 }, async () => {
    const { a, b, resolver } = env;
    const alice = await newClient(a, "alice", resolver, 3);
    const bob = await newClient(b, "bob", resolver, 3);
    const bobToken = b.mastodon.issueToken({ username: "bob", scopes: "read write" });
    const { text } = await bob.backupAccountKey({ passphrase: "bob backup", insecureTestKdf: true });
    const phone = await MlsDmClient.restore({
      dir: join(await mkdtemp(join(tmpdir(), "mls-dm-phone-")), "device"),
      protection: { kind: "none" },
      backup: text,
      secret: "bob backup",
      mastodonToken: bobToken,
      services: resolver,
      keyPackages: 3,
      retry: FAST_RETRY,
      insecureTestKdf: true,
    });
    const devicesV2: unknown = await (
      await fetch(`${b.urls.directory}/v1/accounts/bob%40b.test/devices`)
    ).json();
    const { groupId } = await alice.createGroup([]);
    expect((await alice.verify("@bob@b.test")).status).toBe("verified");

    // bob revokes the phone; then his instance stops answering, and his directory replays the old list
    // and hands out a KeyPackage of the phone.
    expect((await bob.revokeDevice(phone.deviceId)).version).toBe(3);
    b.mastodon.fault("503");
    const kpDir = join(phone.dir, "keypackages");
    let keyPackage = "";
    for (const f of await readdir(kpDir)) {
      const rec = JSON.parse(await readFile(join(kpDir, f), "utf8")) as {
        keyPackage?: string;
        lastResort?: boolean;
      };
      if (rec.keyPackage !== undefined && rec.lastResort === false) keyPackage = rec.keyPackage;
    }
    replay = {
      devices: devicesV2,
      claim: {
        accounts: [
          {
            acct: "bob@b.test",
            status: "ok",
            key_packages: [{ device_id: phone.deviceId, key_package: keyPackage, last_resort: false }],
            exhausted: [],
          },
        ],
      },
    };

    const report = await alice.addMembers(groupId, ["@bob@b.test"]);
    await settle([alice]);
    expect(report.added).toEqual([]);
    expect(report.refused[0]?.reason).toMatch(/^unreachable: its instance did not answer now/);
    expect(alice.members(groupId).map((m) => m.deviceId)).not.toContain(phone.deviceId);
  });
});
