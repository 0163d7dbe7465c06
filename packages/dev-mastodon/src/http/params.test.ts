import { describe, expect, it } from "vitest";
import { booleanParam, fromJson, fromQueryString, ParamMap, ParamsError } from "./params.js";

function plain(value: unknown): unknown {
  if (value instanceof Map) return [...(value as Map<string, unknown>)].map(([k, v]) => [k, plain(v)]);
  if (Array.isArray(value)) return (value as unknown[]).map(plain);
  return value;
}

describe("Rack-style parameters", () => {
  it("nests bracket keys and keeps the order the keys were sent in, numeric ones included", () => {
    const p = fromQueryString(
      "fields_attributes[1][name]=B&fields_attributes[1][value]=2&fields_attributes[0][name]=A&x=1",
    );
    expect(plain(p)).toEqual([
      [
        "fields_attributes",
        [
          [
            "1",
            [
              ["name", "B"],
              ["value", "2"],
            ],
          ],
          ["0", [["name", "A"]]],
        ],
      ],
      ["x", "1"],
    ]);
  });

  it("builds arrays of hashes from k[][name] keys, starting a new hash when a key repeats", () => {
    const p = fromQueryString("f[][name]=a&f[][value]=1&f[][name]=b&f[][value]=2&t[]=x&t[]=y");
    expect(plain(p.get("f"))).toEqual([
      [
        ["name", "a"],
        ["value", "1"],
      ],
      [
        ["name", "b"],
        ["value", "2"],
      ],
    ]);
    expect(p.get("t")).toEqual(["x", "y"]);
  });

  it("decodes + as a space and lets the last of repeated plain keys win", () => {
    expect(plain(fromQueryString("a=1&a=two+words"))).toEqual([["a", "two words"]]);
  });

  it("refuses a key used both as a hash and as a value", () => {
    expect(() => fromQueryString("a=1&a[b]=2")).toThrow(ParamsError);
  });

  it("keeps JSON types, puts a non-object root under _json and refuses malformed JSON", () => {
    expect(plain(fromJson('{"a":[1,true,null,{"b":"c"}]}'))).toEqual([["a", [1, true, null, [["b", "c"]]]]]);
    expect(plain(fromJson("[1]"))).toEqual([["_json", [1]]]);
    expect(() => fromJson("{")).toThrow(ParamsError);
  });

  it("casts booleans like ActiveModel: blank is no value, 0/f/false/off are false", () => {
    const p = new ParamMap(
      Object.entries({ a: "", b: "0", c: "off", d: "true", e: "yes", f: false, g: 1, h: null }),
    );
    expect(["a", "b", "c", "d", "e", "f", "g", "h", "missing"].map((k) => booleanParam(p, k))).toEqual([
      undefined,
      false,
      false,
      true,
      true,
      false,
      true,
      undefined,
      undefined,
    ]);
  });
});
