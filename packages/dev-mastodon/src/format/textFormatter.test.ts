import { describe, expect, it } from "vitest";
import { formatText, type FormatOptions, type MentionTarget } from "./textFormatter.js";

const WEB = "https://social.a.test";
const known: Record<string, MentionTarget> = {
  "alice@": { username: "alice", domain: null, url: `${WEB}/@alice` },
  "bob@b.example": { username: "bob", domain: "b.example", url: "https://b.example/@bob" },
};
const field: FormatOptions = {
  multiline: false,
  relMe: true,
  withDomains: true,
  webOrigin: WEB,
  resolveMention: (u, d) => known[`${u.toLowerCase()}@${d ?? ""}`],
};
const bio: FormatOptions = { ...field, multiline: true, relMe: false, withDomains: false };

describe("formatText (Mastodon's TextFormatter)", () => {
  it("escapes & < > \" and ' the way ERB does, ' as &#39;", () => {
    expect(formatText(`a & b <i>"c"</i> it's`, field)).toBe(
      "a &amp; b &lt;i&gt;&quot;c&quot;&lt;/i&gt; it&#39;s",
    );
  });

  it("leaves an MLS proof value exactly as written", () => {
    const value = `mls1.${"A".repeat(43)}.12.${"b_-".repeat(28)}xy`;
    expect(formatText(value, field)).toBe(value);
  });

  it("links a URL with the scheme hidden and rel=me on fields", () => {
    expect(formatText("https://example.com/x", field)).toBe(
      '<a href="https://example.com/x" target="_blank" rel="nofollow noopener noreferrer me" translate="no">' +
        '<span class="invisible">https://</span><span class="">example.com/x</span>' +
        '<span class="invisible"></span></a>',
    );
    expect(formatText("see https://www.example.org/", bio)).toBe(
      '<p>see <a href="https://www.example.org/" target="_blank" rel="nofollow noopener noreferrer" translate="no">' +
        '<span class="invisible">https://www.</span><span class="">example.org/</span>' +
        '<span class="invisible"></span></a></p>',
    );
  });

  it("elides what follows the first 30 characters, but never a single character", () => {
    const thirtyOne = `https://example.com/${"a".repeat(19)}`;
    expect(formatText(thirtyOne, field)).toContain(`<span class="">${thirtyOne.slice(8)}</span>`);
    const long = `https://example.com/${"a".repeat(25)}`;
    const html = formatText(long, field);
    expect(html).toContain(`<span class="ellipsis">${long.slice(8, 38)}</span>`);
    expect(html).toContain(`<span class="invisible">${long.slice(38)}</span>`);
  });

  it("keeps trailing punctuation out of a link", () => {
    expect(formatText("Go to https://example.com/a.", field)).toMatch(
      /href="https:\/\/example\.com\/a"[^]*<\/a>\.$/,
    );
  });

  it("does not link hosts without a real top-level domain, nor IP addresses", () => {
    expect(formatText("https://a.test/@alice", field)).toBe("https://a.test/@alice");
    expect(formatText("http://127.0.0.1:3000/", field)).toBe("http://127.0.0.1:3000/");
  });

  it("links hashtags to the tag page", () => {
    expect(formatText("#mls rocks", field)).toBe(
      `<a href="${WEB}/tags/mls" class="mention hashtag" rel="tag">#<span>mls</span></a> rocks`,
    );
    expect(formatText("#123", field)).toBe("#123");
  });

  it("links mentions of known accounts, with the domain in fields, and leaves unknown ones as text", () => {
    expect(formatText("@alice", field)).toBe(
      `<span class="h-card" translate="no"><a href="${WEB}/@alice" class="u-url mention">@<span>alice</span></a></span>`,
    );
    expect(formatText("@bob@b.example", field)).toContain("@<span>bob@b.example</span></a>");
    expect(formatText("@bob@b.example", bio)).toContain("@<span>bob</span></a>");
    expect(formatText("@carol@c.example & @dave", field)).toBe("@carol@c.example &amp; @dave");
  });

  it("does not take an e-mail address for a mention", () => {
    expect(formatText("mail alice@example.com", field)).toBe("mail alice@example.com");
  });

  it("wraps multiline text in paragraphs with <br /> for single newlines", () => {
    expect(formatText("one\ntwo\n\nthree", bio)).toBe("<p>one<br />two</p><p>three</p>");
    expect(formatText("   ", bio)).toBe("");
  });
});
