// Finds the URLs, hashtags and mentions in plain text the way Mastodon's Extractor (twitter-text with
// Mastodon's regular expressions) does, closely enough that profile fields and statuses render like a
// real instance's. Indices are UTF-16 offsets into the same string.

export type Entity =
  | { kind: "url"; start: number; end: number; url: string }
  | { kind: "hashtag"; start: number; end: number; hashtag: string }
  | { kind: "mention"; start: number; end: number; username: string; domain: string | null };

// Onigmo's [[:word:]] and [[:alpha:]] in Unicode mode.
const WORD = String.raw`\p{Alphabetic}\p{M}\p{Nd}\p{Pc}`;
const ALPHA = String.raw`\p{Alphabetic}`;

// Account::USERNAME_RE and Account::MENTION_RE.
const USERNAME = String.raw`[a-zA-Z0-9_]+(?:[.\-]+[a-zA-Z0-9_]+)*`;
const MENTION_RE = new RegExp(
  String.raw`(?<![=/${WORD}])@((${USERNAME})(?:@[${WORD}]+(?:[.\-]+[${WORD}]+)*)?)`,
  "gu",
);
// twitter-text's end_mention_match: a mention directly followed by another @, a Latin accent or "://" is none.
const END_MENTION = /^(?:[@＠]|[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f]|:\/\/)/u;
const MAX_DOMAIN_LENGTH = 253;

// Tag::HASHTAG_RE.
const SEP = String.raw`_\u00B7\u30FB\u200C`;
const HASHTAG_FIRST = `[${WORD}_][${WORD}${SEP}]*[${ALPHA}${SEP}][${WORD}${SEP}]*[${WORD}_]`;
const HASHTAG_LAST = `[${WORD}_]*[${ALPHA}][${WORD}_]*`;
const HASHTAG_RE = new RegExp(
  String.raw`(?<![=/)\p{Alphabetic}\p{Nd}])#(${HASHTAG_FIRST}|${HASHTAG_LAST})`,
  "giu",
);

// twitter-text's valid_url with a protocol (Mastodon passes extract_url_without_protocol: false) and
// Mastodon's extra protocols. The candidate is trimmed and its host checked below.
const URL_RE =
  /(?<![A-Za-z0-9@＠$#＃])((?:https?|dat|dweb|ipfs|ipns|ssb|gopher|gemini):\/\/)([^\s/?#<>"'`()[\]{}\\^|,;!*@]+)([/?#][^\s<>"`]*)?/giu;

// twitter-text only links hosts whose top-level domain is in IANA's root zone. Keeping the whole list in
// a fake is not worth it; what matters in tests is that names which are not real TLDs (the reserved
// ones used for test instances, mDNS and private names, bare IP addresses) stay plain text.
const NON_TLDS = new Set([
  "test",
  "example",
  "invalid",
  "localhost",
  "local",
  "internal",
  "lan",
  "home",
  "corp",
  "intranet",
  "private",
  "localdomain",
]);
const LABEL = /^[\p{L}\p{M}\p{N}_-]+$/u;

function validHost(hostAndPort: string): boolean {
  const match = /^(.+?)(?::(\d{1,5}))?$/u.exec(hostAndPort);
  const host = match?.[1];
  if (host === undefined) return false;
  const labels = host.split(".");
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l))) return false;
  const tld = (labels.at(-1) ?? "").toLowerCase();
  if (/^xn--[a-z0-9-]+$/.test(tld)) return true;
  return /^\p{L}{2,}$/u.test(tld) && !NON_TLDS.has(tld);
}

// twitter-text ends a URL path on a letter, digit or one of `=_#/+-` (or a balanced parenthesis); a
// trailing full stop, comma, question mark and the like belong to the sentence.
function trimUrl(url: string): string {
  let out = url;
  for (;;) {
    const last = out.at(-1);
    if (last === undefined) return out;
    if (/[.,;:!?'*$%&|@~[\]]/u.test(last)) {
      out = out.slice(0, -1);
      continue;
    }
    if (last === ")") {
      const opens = out.split("(").length - 1;
      const closes = out.split(")").length - 1;
      if (closes > opens) {
        out = out.slice(0, -1);
        continue;
      }
    }
    return out;
  }
}

function extractUrls(text: string): Entity[] {
  const out: Entity[] = [];
  for (const m of text.matchAll(URL_RE)) {
    const protocol = m[1] ?? "";
    const rest = trimUrl((m[2] ?? "") + (m[3] ?? ""));
    if (!validHost(rest.split(/[/?#]/u)[0] ?? "")) continue;
    const url = protocol + rest;
    out.push({ kind: "url", start: m.index, end: m.index + url.length, url });
  }
  return out;
}

function extractHashtags(text: string): Entity[] {
  if (!text.includes("#")) return [];
  const out: Entity[] = [];
  for (const m of text.matchAll(HASHTAG_RE)) {
    let hashtag = m[1] ?? "";
    const after = text.slice(m.index + m[0].length);
    // "#foohttps://…": the protocol belongs to the URL that follows, not to the tag.
    if (after.startsWith("://")) {
      const cut = /^(.+)(https?)$/u.exec(hashtag);
      if (cut?.[1] !== undefined) hashtag = cut[1];
    }
    out.push({ kind: "hashtag", start: m.index, end: m.index + 1 + hashtag.length, hashtag });
  }
  return out;
}

function extractMentions(text: string): Entity[] {
  if (!/[@＠]/u.test(text)) return [];
  const out: Entity[] = [];
  for (const m of text.matchAll(MENTION_RE)) {
    const screenName = m[1] ?? "";
    if (END_MENTION.test(text.slice(m.index + m[0].length))) continue;
    const [username = "", domain] = screenName.split("@");
    if (domain !== undefined && domain.length > MAX_DOMAIN_LENGTH) continue;
    out.push({
      kind: "mention",
      start: m.index,
      end: m.index + m[0].length,
      username,
      domain: domain ?? null,
    });
  }
  return out;
}

/** The entities of the kinds asked for, earliest first, overlapping ones dropped as twitter-text does. */
export function extractEntities(
  text: string,
  kinds: ReadonlySet<Entity["kind"]> = new Set(["url", "hashtag", "mention"]),
): Entity[] {
  const all = [
    ...(kinds.has("url") ? extractUrls(text) : []),
    ...(kinds.has("hashtag") ? extractHashtags(text) : []),
    ...(kinds.has("mention") ? extractMentions(text) : []),
  ].sort((a, b) => a.start - b.start);
  const kept: Entity[] = [];
  for (const entity of all) {
    const previous = kept.at(-1);
    if (previous !== undefined && entity.start < previous.end) continue;
    kept.push(entity);
  }
  return kept;
}
