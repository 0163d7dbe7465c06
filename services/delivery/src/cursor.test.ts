import { describe, expect, it } from "vitest";
import { toBase64url } from "@mastodon-mls/protocol";
import { decodeCursor, encodeCursor } from "./cursor.js";

const b64 = (text: string) => toBase64url(new TextEncoder().encode(text));

describe("cursors", () => {
  it("round-trip, in a canonical order", () => {
    const cursor = new Map([
      ["10.0", 5],
      ["a", 2],
      ["2.1", 7],
      ["2.0", 9],
    ]);
    const text = encodeCursor(cursor);
    expect(new TextDecoder().decode(Buffer.from(text, "base64url"))).toBe(
      '{"v":1,"p":{"a":2,"2.0":9,"2.1":7,"10.0":5}}',
    );
    expect(decodeCursor(text)).toEqual(cursor);
    expect(decodeCursor(encodeCursor(new Map()))).toEqual(new Map());
    // A stretch is named by the seq of the commit that began it: up to 15 digits.
    const late = new Map([["3.123456789012345", 123456789012346]]);
    expect(decodeCursor(encodeCursor(late))).toEqual(late);
  });

  it("refuse anything but the exact shape", () => {
    for (const bad of [
      "",
      "garbage!",
      "eyJ2IjoxLCJwIjp7fX0=",
      b64("not json"),
      b64('{"v":2,"p":{}}'),
      b64('{"v":1,"p":{},"x":1}'),
      b64('{"v":1,"p":{"b":1}}'),
      b64('{"v":1,"p":{"01.0":1}}'),
      b64('{"v":1,"p":{"1.01":1}}'),
      b64('{"v":1,"p":{"1.1234567890123456":1}}'),
      b64('{"v":1,"p":{"1.0":-1}}'),
      b64('{"v":1,"p":{"1.0":1.5}}'),
      b64('{"v":1,"p":{"__proto__":1}}'),
      b64('{"v":1,"p":[]}'),
    ]) {
      expect(() => decodeCursor(bad), bad).toThrow(expect.objectContaining({ code: "invalid_cursor" }));
    }
  });
});
