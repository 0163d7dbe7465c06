// REST::AccountSerializer and REST::CredentialAccountSerializer. Field values and bios are HTML (see
// format/textFormatter.ts); raw field values appear only in a CredentialAccount's `source`. A suspended
// account keeps its id, names and URLs but shows nothing its owner wrote.
import { formatText, type MentionTarget } from "../format/textFormatter.js";
import { readFields } from "../model/fields.js";
import { isSuspended, type Account, type LocalAccount } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";

/** A resolver for mentions written on this instance, mapping LOCAL_DOMAIN to the local accounts. */
export function mentionResolver(state: InstanceState) {
  return (username: string, domain: string | null): MentionTarget | undefined => {
    const account = state.accounts.find(username, state.isLocalDomain(domain) ? null : domain);
    if (account === undefined) return undefined;
    return {
      username: account.username,
      domain: account.kind === "remote" ? account.domain : null,
      url: state.accountUrl(account),
    };
  };
}

/** Rails' `created_at.midnight.as_json`: the day only, as a UTC timestamp. */
function midnight(date: Date): string {
  return `${date.toISOString().slice(0, 10)}T00:00:00.000Z`;
}

export function renderAccount(
  state: InstanceState,
  account: Account,
  nested = false,
): Record<string, unknown> {
  const suspended = isSuspended(account);
  const web = state.webOrigin;
  const avatar = `${web}/avatars/original/missing.png`;
  const header = `${web}/headers/original/missing.png`;
  const resolveMention = mentionResolver(state);
  const local = account.kind === "local";

  const fields = suspended
    ? []
    : readFields(account.fields, local).map((f) => ({
        name: f.name,
        value: formatText(f.value, {
          multiline: false,
          relMe: true,
          withDomains: true,
          webOrigin: web,
          resolveMention,
        }),
        verified_at: f.verifiedAt,
      }));

  const out: Record<string, unknown> = {
    id: account.id,
    username: account.username,
    acct: state.acct(account),
    display_name: suspended ? "" : account.displayName,
    locked: suspended ? false : account.locked,
    bot: suspended ? false : account.bot,
    discoverable: suspended ? false : account.discoverable,
    indexable: suspended ? false : account.indexable,
    group: false,
    created_at: midnight(account.createdAt),
    note: suspended ? "" : formatText(account.note, { multiline: true, webOrigin: web, resolveMention }),
    url: state.accountUrl(account),
    uri: state.accountUri(account),
    avatar,
    avatar_static: avatar,
    header,
    header_static: header,
    followers_count: 0,
    following_count: 0,
    statuses_count: account.statusesCount,
    last_status_at: account.lastStatusAt === null ? null : account.lastStatusAt.toISOString().slice(0, 10),
    hide_collections: account.hideCollections,
  };
  // The account moved to is rendered once, without its own `moved`, as Mastodon does.
  if (account.movedTo !== null && !nested) {
    out.moved = suspended ? null : renderAccount(state, account.movedTo, true);
  }
  if (suspended) out.suspended = true;
  if (local) out.noindex = false;
  out.emojis = [];
  out.roles = [];
  out.fields = fields;
  return out;
}

/** The `role` of a user with no special role: Mastodon's "everyone" role. */
const EVERYONE_ROLE = { id: "-99", name: "", permissions: "65536", color: "", highlighted: false };

export function renderCredentialAccount(
  state: InstanceState,
  account: LocalAccount,
): Record<string, unknown> {
  return {
    ...renderAccount(state, account),
    source: {
      privacy: account.settings.privacy,
      sensitive: account.settings.sensitive,
      language: account.settings.language,
      note: account.note,
      fields: readFields(account.fields, true).map((f) => ({
        name: f.name,
        value: f.value,
        verified_at: f.verifiedAt,
      })),
      follow_requests_count: 0,
      hide_collections: account.hideCollections,
      discoverable: account.discoverable,
      indexable: account.indexable,
      attribution_domains: [],
    },
    role: EVERYONE_ROLE,
  };
}
