import type { InboxItem } from "@mastodon-mls/protocol";

export type InboxMessageItem = Extract<InboxItem, { kind: "message" }>;
export type InboxWelcomeItem = Extract<InboxItem, { kind: "welcome" }>;
export type InboxInvitationItem = Extract<InboxItem, { kind: "invitation" }>;
export type InboxRemovedItem = Extract<InboxItem, { kind: "removed" }>;
