import { ProtocolError, canonicalDomain, formatIdentity, parseAcct } from "@mastodon-mls/protocol";
import { MastoHttpError, createRestAPIClient, type mastodon } from "masto";
import type { SigningKeyPair } from "./crypto.js";
import {
  MASTODON_FIELD_LIMITS,
  findMlsField,
  withMlsField,
  type FieldLimits,
  type ProfileField,
} from "./profileFields.js";
import { buildProfileFieldValue, formatProfileFieldValue } from "./profileProof.js";

// Publishing the profile proof with masto.js (rules PUB-1…PUB-6 in docs/identity.md). Called after every
// device-list change and account-key rotation, with the new version.

export interface PublishProofOptions {
  /** The instance's API origin, e.g. https://mastodon.example. */
  mastodonUrl: string;
  /** A user token with `read:accounts` (or `profile`) and `write:accounts`. */
  token: string;
  /** The account's canonical `user@domain`. */
  acct: string;
  accountKey: SigningKeyPair;
  deviceListVersion: number;
  timeoutMs?: number;
}

export interface PublishedProof {
  value: string;
  /** The profile's fields as stored after the update, raw. */
  fields: ProfileField[];
}

/** Mastodon's failures as our codes; anything that is not an HTTP answer with a JSON body is "unreachable". */
function asProtocolError(e: unknown): unknown {
  if (e instanceof ProtocolError) return e;
  if (!(e instanceof MastoHttpError)) {
    return new ProtocolError(
      "mastodon_unavailable",
      `The Mastodon instance could not be reached: ${String(e)}`,
    );
  }
  const details = { mastodon_status: e.statusCode, mastodon_error: e.message };
  if (e.statusCode === 401) return new ProtocolError("invalid_token", undefined, details);
  if (e.statusCode === 403 && /scope/i.test(e.message))
    return new ProtocolError("insufficient_scope", undefined, details);
  if (e.statusCode >= 500 || e.statusCode === 429) {
    return new ProtocolError(
      "mastodon_unavailable",
      `The Mastodon instance answered ${e.statusCode}.`,
      details,
    );
  }
  return new ProtocolError("mastodon_refused", `Mastodon refused the update: ${e.message}`, details);
}

async function callMastodon<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw asProtocolError(e);
  }
}

const raw = (fields: readonly mastodon.v1.AccountField[]): ProfileField[] =>
  fields.map((f) => ({ name: f.name, value: f.value }));

function limitsOf(instance: mastodon.v2.Instance): FieldLimits {
  // Reported from Mastodon 4.6 on; older instances have the defaults.
  const accounts = (
    instance.configuration as { accounts?: Partial<mastodon.v2.InstanceAccountsConfiguration> }
  ).accounts;
  return {
    maxFields: accounts?.maxProfileFields ?? MASTODON_FIELD_LIMITS.maxFields,
    valueLimit: Math.min(accounts?.profileFieldValueLimit ?? Infinity, MASTODON_FIELD_LIMITS.valueLimit),
  };
}

export async function publishProof(o: PublishProofOptions): Promise<PublishedProof> {
  const acct = parseAcct(o.acct);
  const identity = formatIdentity(acct);
  const client = createRestAPIClient({
    url: o.mastodonUrl,
    accessToken: o.token,
    timeout: o.timeoutMs ?? 10_000,
  });

  // PUB-1: the token's account is the acct the proof is for (local username and LOCAL_DOMAIN).
  const me = await callMastodon(() => client.v1.accounts.verifyCredentials());
  const instance = await callMastodon(() => client.v2.instance.fetch());
  if (me.username.toLowerCase() !== acct.user || canonicalDomain(instance.domain) !== acct.domain) {
    throw new ProtocolError(
      "acct_mismatch",
      `The token is for ${me.username}@${instance.domain}, not ${acct.user}@${acct.domain}.`,
    );
  }

  // PUB-2…PUB-4: from the raw `source.fields` (the rendered `fields` are HTML, and writing them back
  // would escape them twice), the MLS field replaced or added, everything else as it was.
  const value = await buildProfileFieldValue({
    identity,
    accountKey: o.accountKey,
    deviceListVersion: o.deviceListVersion,
  });
  const fields = withMlsField(raw(me.source.fields), value, limitsOf(instance));
  await callMastodon(() => client.v1.accounts.updateCredentials({ fieldsAttributes: fields }));

  // PUB-5: read back. Mastodon cuts values silently, and another client may have written in between.
  const after = await callMastodon(() => client.v1.accounts.verifyCredentials());
  const stored = raw(after.source.fields);
  const mine = stored.filter((f) => f.name === "MLS");
  if (mine.length !== 1 || mine[0]!.value !== value) {
    throw new ProtocolError("profile_field_not_stored", "The instance did not store the MLS field as sent.", {
      sent: value,
      stored: mine.map((f) => f.value),
    });
  }
  // PUB-6: what everyone else reads (the rendered HTML) parses back to the same proof.
  const seen = findMlsField(raw(after.fields));
  if (seen.kind !== "proof" || formatProfileFieldValue(seen.proof) !== value) {
    throw new ProtocolError(
      "profile_field_not_stored",
      "The instance shows the MLS field differently than stored.",
    );
  }
  return { value, fields: stored };
}
