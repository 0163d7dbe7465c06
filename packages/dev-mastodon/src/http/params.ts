// Request parameters as Rails sees them. Form bodies and query strings use Rack's bracket syntax
// (`fields_attributes[0][name]`, `a[]`, `a[][k]`), JSON bodies keep their types, and every source
// yields the same nested structure. Maps keep insertion order: Mastodon's `fields_attributes` hash
// form is read in the order the keys were sent, which plain objects (sorting "0".."3") would not keep.

/** A file part of a multipart body; only its metadata is kept. */
export class UploadedFile {
  constructor(
    readonly filename: string,
    readonly type: string,
    readonly size: number,
  ) {}
}

export type ParamValue = string | number | boolean | null | UploadedFile | ParamValue[] | ParamMap;
export class ParamMap extends Map<string, ParamValue> {}

/** Raised for a body or query Rack or Rails' JSON parser would refuse (answered 400). */
export class ParamsError extends Error {}

function isMap(value: ParamValue | undefined): value is ParamMap {
  return value instanceof ParamMap;
}

// Rack's params_hash_has_key?: "a][b" style keys are looked up level by level.
function hasKey(map: ParamMap, key: string): boolean {
  if (key.includes("[]")) return false;
  let current: ParamValue = map;
  for (const part of key.split(/[[\]]+/).filter((p) => p !== "")) {
    if (!isMap(current) || !current.has(part)) return false;
    current = current.get(part) ?? null;
  }
  return true;
}

const MAX_DEPTH = 32;

// Rack::QueryParser#normalize_params.
function normalize(params: ParamMap, name: string, value: ParamValue, depth: number): ParamMap {
  if (depth > MAX_DEPTH) throw new ParamsError("parameters nested too deeply");
  const head = /^[[\]]*([^[\]]+)\]*/.exec(name);
  const key = head?.[1] ?? "";
  if (key === "") return params;
  const after = name.slice(head?.[0].length ?? 0);

  if (after === "") {
    params.set(key, value);
  } else if (after === "[") {
    params.set(name, value);
  } else if (after === "[]") {
    const list = params.get(key) ?? [];
    if (!Array.isArray(list)) throw new ParamsError(`expected Array for param \`${key}'`);
    list.push(value);
    params.set(key, list);
  } else {
    const arrayChild = /^\[\]\[([^[\]]+)\]$/.exec(after) ?? /^\[\](.+)$/.exec(after);
    if (arrayChild?.[1] !== undefined) {
      const childKey = arrayChild[1];
      const list = params.get(key) ?? [];
      if (!Array.isArray(list)) throw new ParamsError(`expected Array for param \`${key}'`);
      const last = list.at(-1);
      if (isMap(last) && !hasKey(last, childKey)) normalize(last, childKey, value, depth + 1);
      else list.push(normalize(new ParamMap(), childKey, value, depth + 1));
      params.set(key, list);
    } else {
      const child = params.get(key) ?? new ParamMap();
      if (!isMap(child)) throw new ParamsError(`expected Hash for param \`${key}'`);
      params.set(key, normalize(child, after, value, depth + 1));
    }
  }
  return params;
}

/** Folds (name, value) pairs, in order, into nested parameters with Rack's rules. */
export function fromPairs(pairs: Iterable<readonly [string, ParamValue]>, into = new ParamMap()): ParamMap {
  for (const [name, value] of pairs) normalize(into, name, value, 0);
  return into;
}

export function fromQueryString(query: string, into = new ParamMap()): ParamMap {
  return fromPairs(new URLSearchParams(query), into);
}

function fromJsonValue(value: unknown): ParamValue {
  if (Array.isArray(value)) return value.map((v) => fromJsonValue(v));
  if (value !== null && typeof value === "object") {
    const map = new ParamMap();
    for (const [k, v] of Object.entries(value)) map.set(k, fromJsonValue(v));
    return map;
  }
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return value;
  return null;
}

/** Rails' JSON params: an object's keys become parameters; any other root is put under `_json`. */
export function fromJson(text: string): ParamMap {
  if (text.trim() === "") return new ParamMap();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ParamsError("Error occurred while parsing request parameters");
  }
  const value = fromJsonValue(parsed);
  if (isMap(value)) return value;
  return new ParamMap([["_json", value]]);
}

/** A scalar parameter as a string (numbers and booleans from JSON too); undefined otherwise. */
export function stringParam(params: ParamMap, key: string): string | undefined {
  const value = params.get(key);
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return undefined;
}

const FALSE_VALUES = new Set(["0", "f", "F", "false", "FALSE", "off", "OFF"]);

/**
 * ActiveModel::Type::Boolean#cast: `""` and `null` are "no value" (undefined here); the listed
 * spellings of false are false; anything else is true.
 */
export function booleanParam(params: ParamMap, key: string): boolean | undefined {
  if (!params.has(key)) return undefined;
  const value = params.get(key);
  if (value === null || value === undefined || value === "") return undefined;
  if (value === false || value === 0) return false;
  if (typeof value === "string") return !FALSE_VALUES.has(value);
  return true;
}

export function mapParam(params: ParamMap, key: string): ParamMap | undefined {
  const value = params.get(key);
  return isMap(value) ? value : undefined;
}

export { isMap as isParamMap };
