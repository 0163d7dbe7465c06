// The few HTML pages of the authorization flow. Mastodon asks a signed-in user to approve; the fake has
// no passwords, so its page asks which local account approves. Everything shown is escaped.
import { escapeHtml } from "../format/escape.js";
import type { Application } from "../state/oauth.js";

function page(title: string, body: string): string {
  return (
    `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<title>${escapeHtml(title)} - Mastodon</title>\n</head>\n<body>\n${body}\n</body>\n</html>\n`
  );
}

export function authorizePage(input: {
  app: Application;
  scopes: readonly string[];
  hidden: ReadonlyArray<readonly [string, string]>;
  usernames: readonly string[];
  domain: string;
  message?: string;
}): string {
  const hidden = input.hidden
    .map(([k, v]) => `<input type="hidden" name="${escapeHtml(k)}" value="${escapeHtml(v)}">`)
    .join("\n");
  const options = input.usernames.map((u) => `<option value="${escapeHtml(u)}">`).join("");
  const message = input.message === undefined ? "" : `<p class="error">${escapeHtml(input.message)}</p>\n`;
  return page(
    "Authorization required",
    `<h1>Authorization required</h1>\n${message}` +
      `<p>Application <strong>${escapeHtml(input.app.name)}</strong> requests access to your account.</p>\n` +
      `<p>Scopes: <code>${escapeHtml(input.scopes.join(" "))}</code></p>\n` +
      `<form method="post" action="/oauth/authorize">\n${hidden}\n` +
      `<label>Approve as <input name="username" list="usernames" autocomplete="off" required>@${escapeHtml(input.domain)}</label>\n` +
      `<datalist id="usernames">${options}</datalist>\n` +
      `<button type="submit" name="decision" value="approve">Authorize</button>\n` +
      `<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>\n</form>`,
  );
}

export function codePage(code: string): string {
  return page(
    "Copy this authorization code and paste it to the application.",
    `<h1>Copy this authorization code and paste it to the application.</h1>\n` +
      `<input class="oauth-code" readonly type="text" value="${escapeHtml(code)}">`,
  );
}

export function oauthErrorPage(description: string): string {
  return page("An error has occurred", `<h1>An error has occurred</h1>\n<p>${escapeHtml(description)}</p>`);
}
