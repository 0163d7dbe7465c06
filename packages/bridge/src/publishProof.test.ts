import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ProtocolError } from "@mastodon-mls/protocol";
import { createRestAPIClient } from "masto";
import { parseProfileFieldValue, verifyProfileProof } from "./profileProof.js";
import { publishProof, type PublishProofOptions } from "./publishProof.js";
import { mutatingProxy, type Closable } from "./testServers.js";
import { makeUser, publish, setFields, startWorld, type User, type World } from "./testSupport.js";

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => {
  await world.close();
});
const open: Closable[] = [];
afterEach(async () => {
  world.a.fault("none");
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

async function storedFields(user: User) {
  const client = createRestAPIClient({ url: user.instance.url, accessToken: user.token });
  const me = await client.v1.accounts.verifyCredentials();
  return me.source.fields.map((f) => ({ name: f.name, value: f.value }));
}

const options = (user: User, extra: Partial<PublishProofOptions> = {}): PublishProofOptions => ({
  mastodonUrl: user.instance.url,
  token: user.token,
  acct: user.acct,
  accountKey: user.accountKey,
  deviceListVersion: user.list.version,
  ...extra,
});

describe("publishing the profile proof with masto.js", () => {
  it("round trip on both instances: published, found by the lookup, verified (PUB-1…PUB-6)", async () => {
    for (const user of [await makeUser(world.a, "pia"), await makeUser(world.b, "quin")]) {
      await publish(user, 2);
      const r = await world.lookup(user.acct);
      if (r.kind !== "found") throw new Error(`expected a proof, got ${r.kind}`);
      const proof = await verifyProfileProof(r.proof, user.identity, user.accountKey.publicKey);
      expect(proof.deviceListVersion).toBe(2);
    }
  });

  it("PUB-2: keeps the other fields, raw and in order; the MLS field stays where it is", async () => {
    const rae = await makeUser(world.a, "rae");
    const mine = [
      { name: "Pronouns", value: "they/them" },
      { name: "Site", value: "https://rae.example.com & <b>'quotes'</b>" },
    ];
    await setFields(rae, mine);
    await publish(rae, 2);
    const after = await storedFields(rae);
    expect(after.slice(0, 2)).toEqual(mine);
    expect(after[2]!.name).toBe("MLS");
    await setFields(rae, [mine[0]!, after[2]!, mine[1]!]);
    await publish(rae, 3);
    const again = await storedFields(rae);
    expect(again.map((f) => f.name)).toEqual(["Pronouns", "MLS", "Site"]);
    expect(again[2]).toEqual(mine[1]);
    expect(parseProfileFieldValue(again[1]!.value).deviceListVersion).toBe(3);
  });

  it("PF-1: the value as the instance renders it (HTML) parses", async () => {
    const sam = await makeUser(world.a, "sam");
    const res = await fetch(`${world.a.url}/api/v1/accounts/lookup?acct=${sam.username}`);
    const rendered = ((await res.json()) as { fields: Array<{ name: string; value: string }> }).fields;
    const field = rendered.find((f) => f.name === "MLS")!;
    const proof = parseProfileFieldValue(field.value);
    await expect(verifyProfileProof(proof, sam.identity, sam.accountKey.publicKey)).resolves.toBeTruthy();
  });

  it("PUB-3: refuses when all 4 fields are someone else's, and changes nothing", async () => {
    const tia = await makeUser(world.a, "tia");
    const four = ["a", "b", "c", "d"].map((name) => ({ name, value: name.repeat(3) }));
    await setFields(tia, four);
    expect(await codeOf(publishProof(options(tia)))).toBe("profile_fields_full");
    expect(await storedFields(tia)).toEqual(four);
  });

  it("PUB-4: refuses a value longer than the instance stores, before writing", async () => {
    const uma = await makeUser(world.a, "uma");
    const proxy = await mutatingProxy(world.a.url, {
      "/api/v2/instance": (j) => ({
        ...j,
        configuration: {
          ...(j.configuration as object),
          accounts: { max_profile_fields: 4, profile_field_name_limit: 255, profile_field_value_limit: 100 },
        },
      }),
    });
    open.push(proxy);
    const before = await storedFields(uma);
    expect(await codeOf(publishProof(options(uma, { mastodonUrl: proxy.url, deviceListVersion: 2 })))).toBe(
      "profile_field_too_long",
    );
    expect(await storedFields(uma)).toEqual(before);
  });

  it("PUB-5, PUB-6: notices a value the instance cut silently, in what it stores or in what it shows", async () => {
    const vic = await makeUser(world.a, "vic");
    // An instance with a lower limit that does not report it: it returns the first 100 characters.
    type Fields = Array<{ name: string; value: string }>;
    const cut = (fields: Fields) =>
      fields.map((f) => (f.name === "MLS" ? { ...f, value: f.value.slice(0, 100) } : f));
    const cutStored = (j: Record<string, unknown>) => {
      const source = j.source as { fields: Fields };
      return { ...j, source: { ...source, fields: cut(source.fields) } };
    };
    const cutShown = (j: Record<string, unknown>) => ({ ...j, fields: cut(j.fields as Fields) });
    for (const mutation of [cutStored, cutShown]) {
      const proxy = await mutatingProxy(world.a.url, { "/api/v1/accounts/verify_credentials": mutation });
      open.push(proxy);
      expect(await codeOf(publishProof(options(vic, { mastodonUrl: proxy.url, deviceListVersion: 2 })))).toBe(
        "profile_field_not_stored",
      );
    }
  });

  it("PUB-2: two MLS fields (refused by the lookup, PF-5) are collapsed into one on publishing", async () => {
    const wes = await makeUser(world.a, "wes");
    const [mls] = (await storedFields(wes)).filter((f) => f.name === "MLS");
    await setFields(wes, [mls!, { name: "Pronouns", value: "he" }, mls!]);
    expect(await world.lookup(wes.acct)).toMatchObject({ kind: "invalid", rule: "PF-5" });
    await publish(wes, 2);
    expect((await storedFields(wes)).map((f) => f.name)).toEqual(["MLS", "Pronouns"]);
    expect(await world.lookup(wes.acct)).toMatchObject({ kind: "found", proof: { deviceListVersion: 2 } });
  });

  it("PUB-1: refuses a token for another account; maps Mastodon's failures to stable codes", async () => {
    const xia = await makeUser(world.a, "xia");
    const yan = await makeUser(world.a, "yan");
    expect(await codeOf(publishProof(options(xia, { token: yan.token })))).toBe("acct_mismatch");
    expect(await codeOf(publishProof(options(xia, { acct: `${xia.username}@b.test` })))).toBe(
      "acct_mismatch",
    );
    expect(await codeOf(publishProof(options(xia, { token: "nope" })))).toBe("invalid_token");
    const readOnly = world.a.issueToken({ username: xia.username, scopes: "read" });
    expect(await codeOf(publishProof(options(xia, { token: readOnly })))).toBe("insufficient_scope");
    world.a.fault("html502");
    expect(await codeOf(publishProof(options(xia)))).toBe("mastodon_unavailable");
    world.a.fault("reset");
    expect(await codeOf(publishProof(options(xia)))).toBe("mastodon_unavailable");
  });
});
