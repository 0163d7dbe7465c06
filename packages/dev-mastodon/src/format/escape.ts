// Ruby's ERB::Util.html_escape, which Mastodon's formatters use for every piece of user text:
// the apostrophe becomes `&#39;`, which clients comparing field values byte for byte will notice.
const ENTITIES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

// Ruby's String#strip removes only ASCII whitespace and NUL, unlike String.prototype.trim, which also
// removes Unicode spaces such as U+00A0; Mastodon keeps those.
export function rubyStrip(text: string): string {
  return text.replace(/^[\0\t\n\v\f\r ]+/, "").replace(/[\0\t\n\v\f\r ]+$/, "");
}

// ActiveSupport's String#blank?: empty or only Unicode whitespace.
export function isBlankString(text: string): boolean {
  return /^[\p{White_Space}]*$/u.test(text);
}

/** Ruby's `str[0, n]`: counts code points, not UTF-16 units. */
export function takeCodePoints(text: string, n: number): string {
  const chars = Array.from(text);
  return chars.length <= n ? text : chars.slice(0, n).join("");
}

export function codePointLength(text: string): number {
  return Array.from(text).length;
}
