import { describe, expect, it } from "vitest";
import { fromJson, fromQueryString } from "../http/params.js";
import type { StoredField } from "../state/accounts.js";
import { assignFields, permitFieldsAttributes, readFields, validateFields } from "./fields.js";
import { ValidationErrors } from "./validation.js";

function rows(query: string): StoredField[] {
  const permitted = permitFieldsAttributes(fromQueryString(query).get("fields_attributes"));
  if (permitted.kind !== "rows") throw new Error(permitted.kind);
  return permitted.rows;
}

describe("profile fields", () => {
  it("reads the hash form in the order sent and drops rows with both parts blank", () => {
    const stored = assignFields(
      [],
      rows(
        "fields_attributes[3][name]=Z&fields_attributes[3][value]=z&" +
          "fields_attributes[0][name]=+&fields_attributes[0][value]=&fields_attributes[1][name]=A&fields_attributes[1][value]=a",
      ),
    );
    expect(readFields(stored, true).map((f) => f.name)).toEqual(["Z", "A"]);
  });

  it("strips, then cuts names and values to 255 characters (code points), silently", () => {
    const long = "😀".repeat(300);
    const [f] = readFields(assignFields([], [{ name: `  ${long}  `, value: `\t${long}\n` }]), true);
    expect(Array.from(f!.name)).toHaveLength(255);
    expect(Array.from(f!.value)).toHaveLength(255);
    expect(f!.value.startsWith("😀")).toBe(true);
  });

  it("keeps verified_at only on a row whose value did not change", () => {
    const old: StoredField[] = [
      { name: "Site", value: "https://example.com", verified_at: "2024-05-01T10:00:00.123Z" },
      { name: "Blog", value: "https://blog.example", verified_at: "2024-05-01T10:00:00.123Z" },
    ];
    const next = readFields(
      assignFields(old, [
        { name: "Renamed", value: "https://example.com" },
        { name: "Blog", value: "https://blog.example/new" },
      ]),
      true,
    );
    expect(next.map((f) => f.verifiedAt)).toEqual(["2024-05-01T10:00:00.123+00:00", null]);
  });

  it("hides rows whose value is missing or not a string, as Account#fields skips them", () => {
    const stored = assignFields(
      [],
      rows("fields_attributes[0][name]=OnlyName&fields_attributes[1][name]=N&fields_attributes[1][value]=v"),
    );
    expect(stored).toHaveLength(2);
    expect(readFields(stored, true).map((f) => f.name)).toEqual(["N"]);
  });

  it("accepts a JSON array, ignores a scalar, and fails on a hash not keyed by indices", () => {
    const json = fromJson(
      '{"a":[{"name":"n","value":"v","extra":1}],"b":"x","c":{"name":"n"},"d":{"x":{"name":"n"}}}',
    );
    expect(permitFieldsAttributes(json.get("a"))).toEqual({
      kind: "rows",
      rows: [{ name: "n", value: "v" }],
    });
    expect(permitFieldsAttributes(json.get("b"))).toEqual({ kind: "absent" });
    expect(permitFieldsAttributes(json.get("c"))).toEqual({ kind: "server_error" });
    expect(permitFieldsAttributes(json.get("d"))).toEqual({ kind: "rows", rows: [] });
  });

  it("validates at most 4 fields and no value without a name, with Rails' messages", () => {
    const errors = new ValidationErrors();
    const five = Array.from({ length: 5 }, (_, i) => ({
      name: i === 0 ? " " : `n${i}`,
      value: "v",
      verifiedAt: null,
    }));
    validateFields(five, errors);
    expect(errors.formatted()).toEqual({
      error:
        "Validation failed: Fields is too long (maximum is 4 characters), Fields contains values with missing labels",
      details: {
        fields: [
          { error: "ERR_TOO_LONG", description: "is too long (maximum is 4 characters)" },
          {
            error: "ERR_FIELDS_WITH_VALUES_MISSING_LABELS",
            description: "contains values with missing labels",
          },
        ],
      },
    });
  });
});
