// REST::ApplicationSerializer and REST::CredentialApplicationSerializer (Mastodon 4.3+: `scopes` and
// `redirect_uris` as arrays, the deprecated `redirect_uri` and `vapid_key` still present).
import type { InstanceState } from "../state/instance.js";
import type { Application } from "../state/oauth.js";

export function renderApplication(state: InstanceState, app: Application): Record<string, unknown> {
  return {
    id: app.id,
    name: app.name,
    website: app.website,
    scopes: [...app.scopes],
    redirect_uris: [...app.redirectUris],
    vapid_key: state.config.vapidKey,
    redirect_uri: app.redirectUris.join("\n"),
  };
}

export function renderCredentialApplication(state: InstanceState, app: Application): Record<string, unknown> {
  return {
    ...renderApplication(state, app),
    client_id: app.clientId,
    client_secret: app.clientSecret,
    client_secret_expires_at: 0,
  };
}
