import { describe, expect, it } from "vitest";
import { MemoryNonceStore } from "./nonceStore.js";

// MemoryNonceStore: a replay is refused; one device spending nonces fast is held to its own bound and
// does not lock the others out; expired nonces free their room.

describe("MemoryNonceStore", () => {
  const TTL = 660;

  it("refuses a key seen within its lifetime and takes it again afterwards", async () => {
    let now = 0;
    const store = new MemoryNonceStore(() => now);
    expect(await store.claim("dev1:n1", TTL)).toBe(true);
    expect(await store.claim("dev1:n1", TTL)).toBe(false);
    now += TTL * 1000 + 1;
    expect(await store.claim("dev1:n1", TTL)).toBe(true);
  });

  it("holds one device to its own bound while other devices go on", async () => {
    let now = 0;
    const store = new MemoryNonceStore(() => now, 1_000, 5);
    for (let i = 0; i < 5; i++) expect(await store.claim(`greedy:n${i}`, TTL)).toBe(true);
    expect(await store.claim("greedy:n5", TTL)).toBe(false);
    expect(await store.claim("honest:n0", TTL)).toBe(true);
    expect(await store.claim("honest:n1", TTL)).toBe(true);
    // Its nonces expire: it has room again (and the replays of them stay refused until then).
    now += 60_000;
    expect(await store.claim("greedy:n0", TTL)).toBe(false);
    now += TTL * 1000;
    expect(await store.claim("greedy:n6", TTL)).toBe(true);
  });

  it("refuses everyone when full in all, rather than forget a live nonce", async () => {
    let now = 0;
    const store = new MemoryNonceStore(() => now, 4, 3);
    for (const key of ["a:1", "a:2", "b:1", "b:2"]) expect(await store.claim(key, TTL)).toBe(true);
    expect(await store.claim("c:1", TTL)).toBe(false);
    expect(await store.claim("a:1", TTL)).toBe(false);
    now += TTL * 1000 + 2_000;
    expect(await store.claim("c:1", TTL)).toBe(true);
    expect(await store.claim("a:1", TTL)).toBe(true);
  });

  it("counts a device's nonces once however often they are replayed", async () => {
    const store = new MemoryNonceStore(() => 0, 1_000, 2);
    expect(await store.claim("d:1", TTL)).toBe(true);
    for (let i = 0; i < 10; i++) expect(await store.claim("d:1", TTL)).toBe(false);
    expect(await store.claim("d:2", TTL)).toBe(true);
  });
});
