// Mastodon's TextFormatter: plain text written on this instance (profile field values, bios, statuses)
// becomes the HTML every Account and Status rendering carries. Clients that compare a field value with
// what they published must undo exactly this, so the fake reproduces it rather than passing text through.
import { escapeHtml } from "./escape.js";
import { extractEntities, type Entity } from "./extractor.js";

/** An account a mention may point at, as the formatter needs it. */
export interface MentionTarget {
  readonly username: string;
  /** `null` for an account of this instance. */
  readonly domain: string | null;
  /** Its profile page: the link target. */
  readonly url: string;
}

export interface FormatOptions {
  /** Wrap paragraphs in `<p>` and turn single newlines into `<br />` (bios and statuses, not fields). */
  readonly multiline: boolean;
  /** Add `me` to links' rel (profile fields, so rel=me verification works). */
  readonly relMe?: boolean;
  /** Show mentions as `@user@domain` when the account is remote (profile fields). */
  readonly withDomains?: boolean;
  /** Origin of this instance's web pages, for hashtag links. */
  readonly webOrigin: string;
  /**
   * Finds the account a mention names; `domain` is already `null` for this instance's own domain.
   * Mentions of unknown accounts stay plain text, as on Mastodon.
   */
  readonly resolveMention: (username: string, domain: string | null) => MentionTarget | undefined;
}

const URL_PREFIX = /^(?:https?:\/\/(?:www\.)?|xmpp:)/;
const DISPLAY_LENGTH = 30;

/** TextFormatter.shortened_link: the scheme and `www.` hidden, anything past 30 characters elided. */
export function shortenedLink(url: string, relMe: boolean): string {
  const rel = relMe ? "nofollow noopener noreferrer me" : "nofollow noopener noreferrer";
  const chars = Array.from(url);
  const prefix = URL_PREFIX.exec(url)?.[0] ?? "";
  const rest = chars.slice(Array.from(prefix).length);
  let display = rest.slice(0, DISPLAY_LENGTH).join("");
  let suffix = rest.slice(DISPLAY_LENGTH).join("");
  let cutoff = rest.length > DISPLAY_LENGTH;
  // Eliding a single character would hide nothing: show it instead of the ellipsis.
  if (rest.length === DISPLAY_LENGTH + 1) {
    display += suffix;
    suffix = "";
    cutoff = false;
  }
  return (
    `<a href="${escapeHtml(url)}" target="_blank" rel="${rel}" translate="no">` +
    `<span class="invisible">${escapeHtml(prefix)}</span>` +
    `<span class="${cutoff ? "ellipsis" : ""}">${escapeHtml(display)}</span>` +
    `<span class="invisible">${escapeHtml(suffix)}</span></a>`
  );
}

function hashtagLink(hashtag: string, webOrigin: string): string {
  const href = `${webOrigin}/tags/${encodeURIComponent(hashtag)}`;
  return `<a href="${escapeHtml(href)}" class="mention hashtag" rel="tag">#<span>${escapeHtml(hashtag)}</span></a>`;
}

function mentionLink(entity: Extract<Entity, { kind: "mention" }>, options: FormatOptions): string {
  const target = options.resolveMention(entity.username, entity.domain);
  const written = entity.domain === null ? entity.username : `${entity.username}@${entity.domain}`;
  if (target === undefined) return `@${escapeHtml(written)}`;
  const shown =
    options.withDomains === true && target.domain !== null
      ? `${target.username}@${target.domain}`
      : target.username;
  return (
    `<span class="h-card" translate="no"><a href="${escapeHtml(target.url)}" class="u-url mention">` +
    `@<span>${escapeHtml(shown)}</span></a></span>`
  );
}

// ActionView's simple_format with sanitize: false, followed by Mastodon's removal of newlines.
function simpleFormat(html: string): string {
  const paragraphs = html
    .replace(/\r\n?/g, "\n")
    .split(/\n\n+/)
    .map((p) => p.replace(/([^\n]\n)(?=[^\n])/g, "$1<br />"));
  while (paragraphs.length > 0 && paragraphs.at(-1) === "") paragraphs.pop();
  const wrapped = paragraphs.length === 0 ? "<p></p>" : paragraphs.map((p) => `<p>${p}</p>`).join("\n\n");
  return wrapped.replaceAll("\n", "");
}

/**
 * Renders plain text to Mastodon's HTML. `domain` handling for mentions is the caller's: pass a
 * resolver that maps this instance's LOCAL_DOMAIN to `null`.
 */
export function formatText(text: string, options: FormatOptions): string {
  if (/^[\p{White_Space}]*$/u.test(text)) return "";
  let html = "";
  let index = 0;
  for (const entity of extractEntities(text)) {
    html += escapeHtml(text.slice(index, entity.start));
    if (entity.kind === "url") html += shortenedLink(entity.url, options.relMe === true);
    else if (entity.kind === "hashtag") html += hashtagLink(entity.hashtag, options.webOrigin);
    else html += mentionLink(entity, options);
    index = entity.end;
  }
  html += escapeHtml(text.slice(index));
  return options.multiline ? simpleFormat(html) : html;
}
