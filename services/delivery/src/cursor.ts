import { z } from "zod";
import { ProtocolError, fromBase64url } from "@mastodon-mls/protocol";

/**
 * An inbox cursor: a position in each of a device's streams.
 *
 *   "a"        the account's invitations; position = the last invitation seq delivered
 *   "<n>.<f>"  the membership stretch of the device that began at seq f (the adding commit; 0 for the
 *              creator) in the group it numbers n (store.deviceGroups); position = the last group seq
 *              delivered; the Welcome sits at the adding commit's seq and the `removed` notice one past the
 *              removing commit's. No commit adds a device twice, so f names one stretch for good: a stretch
 *              of a device added back after the group forgot it never inherits an old position.
 *
 * A cursor names only the streams it moves; every other stream is at the device's acknowledged position.
 * On the wire: base64url of `{"v":1,"p":{"a":3,"1.0":17}}`. Clients treat it as opaque.
 */
export type Cursor = ReadonlyMap<string, number>;

export const ACCOUNT_STREAM = "a";
export const MAX_CURSOR_STREAMS = 10_000;

const StreamKey = /^(a|(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,14}))$/;

const CursorJson = z
  .object({
    v: z.literal(1),
    p: z.record(z.string().regex(StreamKey), z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)),
  })
  .strict();

export function membershipStream(groupNumber: number, from: number): string {
  return `${groupNumber}.${from}`;
}

/** The group number of a membership stream key, or undefined for the account stream. */
export function groupNumberOf(stream: string): number | undefined {
  return stream === ACCOUNT_STREAM ? undefined : Number(stream.slice(0, stream.indexOf(".")));
}

/** The seq a membership stream key's stretch began at (`f` of "<n>.<f>"); only for membership streams. */
export function stretchFromOf(stream: string): number {
  return Number(stream.slice(stream.indexOf(".") + 1));
}

export function encodeCursor(cursor: Cursor): string {
  // By hand, on the push path for every item: keys match StreamKey, so nothing needs escaping. The
  // same text as JSON.stringify({ v: 1, p }). All ASCII, so latin1 gives the UTF-8 bytes, faster.
  let json = '{"v":1,"p":{';
  if (cursor.size === 1) {
    for (const [key, pos] of cursor) json += `"${key}":${pos}`;
  } else {
    const keys = [...cursor.keys()].sort(compareStreams);
    for (let i = 0; i < keys.length; i++) json += `${i > 0 ? "," : ""}"${keys[i]!}":${cursor.get(keys[i]!)!}`;
  }
  json += "}}";
  if (json.length > scratch.length) return Buffer.from(json, "latin1").toString("base64url");
  scratch.write(json, 0, "latin1");
  return scratch.toString("base64url", 0, json.length);
}

/** encodeCursor's bytes, reused (one call at a time: nothing in between can run). */
const scratch = Buffer.allocUnsafeSlow(4096);

/** Strict: canonical base64url, UTF-8 JSON of exactly the shape above. Anything else is `invalid_cursor`. */
export function decodeCursor(text: string): Cursor {
  const invalid = () => new ProtocolError("invalid_cursor");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(fromBase64url(text, 64 * 1024)));
  } catch {
    throw invalid();
  }
  const parsed = CursorJson.safeParse(json);
  if (!parsed.success) throw invalid();
  const entries = Object.entries(parsed.data.p);
  // zod drops a "__proto__" key silently; a cursor that lost a key is not the cursor that was sent.
  const sent = Object.keys((json as { p: object }).p).length;
  if (entries.length !== sent || entries.length > MAX_CURSOR_STREAMS) throw invalid();
  return new Map(entries);
}

function compareStreams(a: string, b: string): number {
  if (a === b) return 0;
  if (a === ACCOUNT_STREAM) return -1;
  if (b === ACCOUNT_STREAM) return 1;
  const [an, ak] = a.split(".").map(Number) as [number, number];
  const [bn, bk] = b.split(".").map(Number) as [number, number];
  return an - bn || ak - bk;
}
