import { MemoryPinStore, TransportError } from "@mastodon-mls/bridge";
import { describe, expect, it } from "vitest";
import { ServiceUnavailableError } from "../errors.js";
import type { DirectoryClient } from "../transport/directoryClient.js";
import type { ServiceResolver } from "../transport/resolver.js";
import { MemberVerifier } from "./verifier.js";

// The verifier's caches as background verification relies on them (identity/members.ts): a directory
// that fails is not asked again for its 60 s counted from when it failed, askers share one request, an
// answer asked for before `forget` is not kept, and "fresh since" counts looks, not the clock. An
// injected clock and a scripted directory: no network, no waiting.

const ACCT = "carol@c.test";

/** A directory whose answers wait for `release()`, then fail (`down`) or serve an empty list. */
function scriptedDirectory() {
  const state = { requests: 0, down: false, gates: [] as (() => void)[] };
  const client = {
    async accountDevices(acct: string) {
      state.requests++;
      await new Promise<void>((resolve) => state.gates.push(resolve));
      if (state.down) throw new ServiceUnavailableError("directory", "http://dir.c.test", "timed out");
      return { acct, devices: [], device_list: null, key_rotations: [] };
    },
  } as unknown as DirectoryClient;
  const releaseAll = () => {
    for (const open of state.gates.splice(0)) open();
  };
  return { state, client, releaseAll };
}

function verifierWith(directory: DirectoryClient, clock: { t: number }): MemberVerifier {
  const services: ServiceResolver = { resolve: () => Promise.reject(new Error("not used")) };
  return new MemberVerifier(
    {
      services,
      directoryOf: () => Promise.resolve(directory),
      pins: new MemoryPinStore(),
      clock: () => clock.t,
    },
    // Profiles are not what these tests are about: every lookup finds the instance down at once.
    { get: () => Promise.reject(new TransportError("network", "down")) },
  );
}

/** Lets the directory answer whatever it is asked until `work` is done (it may ask nothing). */
async function answering<T>(dir: { releaseAll(): void }, work: Promise<T>): Promise<T> {
  let settled = false;
  const done = work.finally(() => (settled = true));
  while (!settled) {
    dir.releaseAll();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return done;
}

/** Resolves once the directory has been asked `n` times in all. */
async function asked(state: { requests: number }, n: number): Promise<void> {
  while (state.requests < n) await new Promise((resolve) => setImmediate(resolve));
}

describe("member verifier caches", () => {
  it("remembers a directory that failed for its 60 s from when the failure came back", async () => {
    const clock = { t: 0 };
    const dir = scriptedDirectory();
    dir.state.down = true;
    const verifier = verifierWith(dir.client, clock);
    const answer = verifier.directoryAccount(ACCT);
    await asked(dir.state, 1);
    clock.t = 30_000; // a directory that hangs fails at the timeout
    dir.releaseAll();
    expect(await answer).toBeUndefined();
    clock.t = 30_000 + 59_999;
    expect(await answering(dir, verifier.directoryAccount(ACCT))).toBeUndefined();
    expect(dir.state.requests).toBe(1);
    clock.t = 30_000 + 60_000;
    await answering(dir, verifier.directoryAccount(ACCT));
    expect(dir.state.requests).toBe(2);
  });

  it("shares one directory request between askers, and keeps no answer asked for before forget()", async () => {
    const clock = { t: 0 };
    const dir = scriptedDirectory();
    const verifier = verifierWith(dir.client, clock);
    const [first, second] = [verifier.directoryAccount(ACCT), verifier.directoryAccount(ACCT)];
    await asked(dir.state, 1);
    verifier.forget(ACCT);
    dir.releaseAll();
    expect(await first).toEqual({ deviceList: null, keyRotations: [] });
    expect(await second).toEqual({ deviceList: null, keyRotations: [] });
    expect(dir.state.requests).toBe(1);
    // The answer came back after forget(): not kept, so the next asker asks again (and that one is kept).
    await answering(dir, verifier.directoryAccount(ACCT));
    await answering(dir, verifier.directoryAccount(ACCT));
    expect(dir.state.requests).toBe(2);
  });

  it("counts a fresh look as fresh by marks, whatever the clock does", async () => {
    const clock = { t: 1_000_000 };
    const dir = scriptedDirectory();
    const verifier = verifierWith(dir.client, clock);
    const look = async (opts: { fresh: boolean; freshSince?: number }) => {
      const before = dir.state.requests;
      await answering(dir, verifier.prefetch(ACCT, opts));
      return dir.state.requests - before;
    };
    const since = verifier.mark();
    expect(await look({ fresh: true, freshSince: since })).toBe(1);
    // The clock steps back an hour: the look made after `since` still counts as fresh since it.
    clock.t -= 3_600_000;
    expect(await look({ fresh: true, freshSince: since })).toBe(0);
    // A mark taken after that look asks again.
    expect(await look({ fresh: true, freshSince: verifier.mark() })).toBe(1);
  });
});
