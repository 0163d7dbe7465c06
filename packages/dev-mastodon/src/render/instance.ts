// REST::InstanceSerializer (v2) and the older V1 form. `domain` is LOCAL_DOMAIN: clients read the
// canonical `user@domain` handle from it, not from the host they connected to. The profile-field limits
// under configuration.accounts appeared in Mastodon 4.6; an instance configured as older omits them, so
// clients can be tested against both.
import { FIELD_LIMIT_LOCAL, MAX_FIELDS } from "../model/fields.js";
import type { InstanceState } from "../state/instance.js";
import { isSuspended } from "../state/accounts.js";

export const SOURCE_URL = "https://github.com/mastodon/mastodon";
const MAX_CHARACTERS = 500;

/** True when the configured version is at least major.minor. */
export function versionAtLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (m === null) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

function activeUsers(state: InstanceState): number {
  return state.accounts.locals().filter((a) => !isSuspended(a)).length;
}

function statusesConfiguration() {
  return { max_characters: MAX_CHARACTERS, max_media_attachments: 4, characters_reserved_per_url: 23 };
}

const MEDIA_CONFIGURATION = {
  supported_mime_types: ["image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4", "audio/mpeg"],
  description_limit: 1500,
  image_size_limit: 16777216,
  image_matrix_limit: 33177600,
  video_size_limit: 103809024,
  video_frame_rate_limit: 120,
  video_matrix_limit: 8294400,
};
const POLLS_CONFIGURATION = {
  max_options: 4,
  max_characters_per_option: 50,
  min_expiration: 300,
  max_expiration: 2629746,
};

export function renderInstanceV2(state: InstanceState): Record<string, unknown> {
  const web = state.webOrigin;
  const { version } = state.config;
  const accounts: Record<string, number> = { max_featured_tags: 10, max_pinned_statuses: 5 };
  if (versionAtLeast(version, 4, 6)) {
    accounts.max_profile_fields = MAX_FIELDS;
    accounts.profile_field_name_limit = FIELD_LIMIT_LOCAL;
    accounts.profile_field_value_limit = FIELD_LIMIT_LOCAL;
  }
  return {
    domain: state.config.domain,
    title: state.config.title,
    version,
    source_url: SOURCE_URL,
    description: `A development stand-in for a Mastodon instance serving @${state.config.domain} accounts.`,
    usage: { users: { active_month: activeUsers(state) } },
    thumbnail: { url: `${web}/packs/media/images/preview.png` },
    icon: [],
    languages: ["en"],
    configuration: {
      urls: {
        streaming: web.replace(/^http/, "ws"),
        status: null,
        about: `${web}/about`,
        privacy_policy: `${web}/privacy-policy`,
        terms_of_service: null,
      },
      vapid: { public_key: state.config.vapidKey },
      accounts,
      statuses: statusesConfiguration(),
      media_attachments: MEDIA_CONFIGURATION,
      polls: POLLS_CONFIGURATION,
      translation: { enabled: false },
    },
    registrations: { enabled: false, approval_required: false, message: null, url: null },
    api_versions: { mastodon: 2 },
    contact: { email: `admin@${state.config.domain}`, account: null },
    rules: [],
  };
}

export function renderInstanceV1(state: InstanceState): Record<string, unknown> {
  const web = state.webOrigin;
  return {
    uri: state.config.domain,
    title: state.config.title,
    short_description: "",
    description: "",
    email: `admin@${state.config.domain}`,
    version: state.config.version,
    urls: { streaming_api: web.replace(/^http/, "ws") },
    stats: { user_count: activeUsers(state), status_count: 0, domain_count: 0 },
    thumbnail: `${web}/packs/media/images/preview.png`,
    languages: ["en"],
    registrations: false,
    approval_required: false,
    invites_enabled: false,
    configuration: {
      accounts: { max_featured_tags: 10 },
      statuses: statusesConfiguration(),
      media_attachments: MEDIA_CONFIGURATION,
      polls: POLLS_CONFIGURATION,
    },
    contact_account: null,
    rules: [],
  };
}
