// How Mastodon counts characters against its limits (StatusLengthValidator, NoteLengthValidator):
// grapheme clusters, with every URL counted as 23 characters and a mention of a remote account counted
// without its domain, so that neither long links nor long domains eat into what a person may write.
import { extractEntities } from "../format/extractor.js";

export const URL_PLACEHOLDER_LENGTH = 23;
const COUNTED = new Set(["url", "mention"] as const);
const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });

export function countableText(text: string): string {
  let out = "";
  let index = 0;
  for (const entity of extractEntities(text, COUNTED)) {
    out += text.slice(index, entity.start);
    out += entity.kind === "mention" ? `@${entity.username}` : "x".repeat(URL_PLACEHOLDER_LENGTH);
    index = entity.end;
  }
  return out + text.slice(index);
}

export function countableLength(text: string): number {
  let n = 0;
  for (const _ of segmenter.segment(countableText(text))) n += 1;
  return n;
}
