import { createRestAPIClient, MastoHttpError } from "masto";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { json, useInstances } from "./testSupport.js";

const start = useInstances();

describe("several instances in one process", () => {
  it("keep separate domains, accounts and tokens", async () => {
    const a = await start({ domain: "a.test", accounts: [{ username: "alice" }] });
    const b = await start({ domain: "b.test", accounts: [{ username: "bob" }] });
    expect(a.url).not.toBe(b.url);
    const onA = createRestAPIClient({ url: a.url });
    const onB = createRestAPIClient({ url: b.url });
    expect([(await onA.v2.instance.fetch()).domain, (await onB.v2.instance.fetch()).domain]).toEqual([
      "a.test",
      "b.test",
    ]);
    expect((await onB.v1.accounts.lookup({ acct: "bob@b.test" })).url).toBe(`${b.url}/@bob`);
    // Lookup never asks the other server: a.test does not know bob.
    const error: unknown = await onA.v1.accounts.lookup({ acct: "bob@b.test" }).catch((e: unknown) => e);
    expect((error as MastoHttpError).statusCode).toBe(404);
    const jrd = await json(await fetch(`${b.url}/.well-known/webfinger?resource=acct:bob@b.test`));
    expect(jrd.subject).toBe("acct:bob@b.test");
    expect((await fetch(`${a.url}/.well-known/webfinger?resource=acct:bob@b.test`)).status).toBe(404);
    const tokenOnA = a.issueToken({ username: "alice", scopes: "read" });
    const onBWithA = createRestAPIClient({ url: b.url, accessToken: tokenOnA });
    const refused: unknown = await onBWithA.v1.accounts.verifyCredentials().catch((e: unknown) => e);
    expect((refused as MastoHttpError).statusCode).toBe(401);
  });

  it("let an account move to another instance's account", async () => {
    const a = await start({ domain: "a.test", accounts: [{ username: "alice" }] });
    const b = await start({ domain: "b.test", accounts: [{ username: "alice" }] });
    a.move("alice", b.account("alice").uri);
    const moved = await json(await fetch(`${a.url}/api/v1/accounts/lookup?acct=alice`));
    expect([moved.moved.acct, moved.moved.uri]).toEqual([
      `alice@${new URL(b.url).host}`,
      `${b.url}/users/alice`,
    ]);
  });

  it("name themselves by publicUrl while listening elsewhere", async () => {
    const m = await start({
      domain: "a.test",
      publicUrl: "https://social.a.test/",
      accounts: [{ username: "alice" }],
    });
    expect(m.url).toBe("https://social.a.test");
    expect(m.listenUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const body = await json(await fetch(`${m.listenUrl}/api/v1/accounts/lookup?acct=alice`));
    expect([body.uri, body.url]).toEqual([
      "https://social.a.test/users/alice",
      "https://social.a.test/@alice",
    ]);
    expect(m.account("alice").acct).toBe("alice@a.test");
  });

  it("refuse bad options at start", async () => {
    await expect(start({ domain: "not a domain" })).rejects.toThrow(/domain/);
    await expect(start({ domain: "a.test", version: "four" })).rejects.toThrow(/version/);
  });

  it("log through a given pino logger, without the tokens presented", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });
    const m = await start({ logger, accounts: [{ username: "alice" }] });
    const token = m.issueToken({ username: "alice", scopes: "read" });
    await fetch(`${m.url}/api/v1/accounts/verify_credentials?access_token=${token}`);
    await fetch(`${m.url}/api/v1/accounts/verify_credentials`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const completed = lines.filter((l) => l.includes("request completed"));
    expect(completed).toHaveLength(2);
    expect(lines.join("\n")).not.toContain(token);
  });
});
