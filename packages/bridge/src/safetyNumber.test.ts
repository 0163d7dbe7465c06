import { describe, expect, it } from "vitest";
import { generateSigningKeyPair } from "./crypto.js";
import { matchesSafetyNumber, safetyNumber, safetyNumberQr } from "./safetyNumber.js";

const [ka, kb, kc] = await Promise.all([1, 2, 3].map(() => generateSigningKeyPair()));
const alice = { acct: "alice@a.test", accountKey: ka!.publicKey };
const bob = { acct: "bob@b.test", accountKey: kb!.publicKey };

describe("safety numbers", () => {
  it("SN-1, SN-2: 60 digits in 12 groups, the same whoever computes them", () => {
    const mine = safetyNumber(alice, bob);
    expect(mine.digits).toMatch(/^[0-9]{60}$/);
    expect(mine.groups).toHaveLength(12);
    expect(mine.text.split("\n")).toHaveLength(3);
    expect(safetyNumber(bob, alice)).toEqual(mine);
  });

  it("SN-1: changes with either account key or acct", () => {
    const base = safetyNumber(alice, bob).digits;
    expect(safetyNumber(alice, { ...bob, accountKey: kc!.publicKey }).digits).not.toBe(base);
    expect(safetyNumber({ ...alice, accountKey: kc!.publicKey }, bob).digits).not.toBe(base);
    expect(safetyNumber(alice, { ...bob, acct: "bob@c.test" }).digits).not.toBe(base);
    // The handle is canonicalised first: spelling it differently is the same person.
    expect(safetyNumber(alice, { ...bob, acct: "@Bob@B.test" }).digits).toBe(base);
  });

  it("SN-3: matches what a person typed or a scanner read, and nothing else", () => {
    const n = safetyNumber(alice, bob);
    expect(matchesSafetyNumber(n, n.text)).toBe(true);
    expect(matchesSafetyNumber(n, ` ${n.groups.join("-")} `)).toBe(true);
    expect(matchesSafetyNumber(n, n.qrPayload)).toBe(true);
    const wrong = (n.digits[0] === "1" ? "2" : "1") + n.digits.slice(1);
    expect(matchesSafetyNumber(n, wrong)).toBe(false);
    expect(matchesSafetyNumber(n, n.digits.slice(0, 59))).toBe(false);
    expect(matchesSafetyNumber(n, `${n.digits}0`)).toBe(false);
    expect(matchesSafetyNumber(n, safetyNumber(alice, { ...bob, accountKey: kc!.publicKey }).qrPayload)).toBe(
      false,
    );
  });

  it("SN-4: renders a QR code for a terminal", async () => {
    const qr = await safetyNumberQr(safetyNumber(alice, bob));
    const lines = qr.trimEnd().split("\n");
    expect(lines.length).toBeGreaterThan(10);
    expect(qr).toMatch(/[█▀▄]/);
    expect(await safetyNumberQr(safetyNumber(bob, alice))).toBe(qr);
  });
});
