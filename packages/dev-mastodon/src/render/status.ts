// REST::StatusSerializer for a status nobody has interacted with. Mentions link only to accounts the
// status actually mentions (the formatter's preloaded accounts), as on Mastodon.
import { formatText } from "../format/textFormatter.js";
import type { Account, LocalAccount } from "../state/accounts.js";
import type { InstanceState } from "../state/instance.js";
import type { Status } from "../state/statuses.js";
import { renderAccount } from "./account.js";

export function renderStatus(
  state: InstanceState,
  status: Status,
  viewer: LocalAccount | undefined,
): Record<string, unknown> {
  const known: Account[] = [status.account, ...status.mentions];
  const content = formatText(status.text, {
    multiline: true,
    webOrigin: state.webOrigin,
    resolveMention: (username, domain) => {
      const local = state.isLocalDomain(domain);
      const account = known.find(
        (a) =>
          a.username.toLowerCase() === username.toLowerCase() &&
          (a.kind === "local" ? local : !local && a.domain === domain?.toLowerCase()),
      );
      if (account === undefined) return undefined;
      return {
        username: account.username,
        domain: account.kind === "remote" ? account.domain : null,
        url: state.accountUrl(account),
      };
    },
  });
  const own = viewer === status.account;
  return {
    id: status.id,
    created_at: status.createdAt.toISOString(),
    in_reply_to_id: status.inReplyTo?.id ?? null,
    in_reply_to_account_id: status.inReplyTo?.account.id ?? null,
    sensitive: status.sensitive,
    spoiler_text: status.spoilerText,
    visibility: status.visibility,
    language: status.language,
    uri: state.statusUri(status),
    url: state.statusUrl(status),
    replies_count: 0,
    reblogs_count: 0,
    favourites_count: 0,
    edited_at: null,
    ...(viewer === undefined
      ? {}
      : {
          favourited: false,
          reblogged: false,
          muted: false,
          bookmarked: false,
          ...(own ? { pinned: false } : {}),
        }),
    content,
    filtered: [],
    reblog: null,
    application:
      status.application === null
        ? null
        : { name: status.application.name, website: status.application.website },
    account: renderAccount(state, status.account),
    media_attachments: [],
    mentions: status.mentions.map((a) => ({
      id: a.id,
      username: a.username,
      url: state.accountUrl(a),
      acct: state.acct(a),
    })),
    tags: [],
    emojis: [],
    card: null,
    poll: null,
  };
}
