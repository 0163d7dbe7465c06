import { ProtocolError } from "@mastodon-mls/protocol";
import { ClientError, ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import { MastodonError } from "../mastodon/oauth.js";
import { StoreFormatError } from "../store/records.js";
import { Interrupted, UsageError, safeText } from "./io.js";

/** The CLI's exit codes (documented in the README and in `mls-dm --help`). */
export const EXIT = {
  ok: 0,
  /** Bad arguments, an unknown group, something this device cannot do. */
  usage: 1,
  /** A Mastodon instance or one of our services could not be reached (or answered with garbage). */
  unreachable: 2,
  /** A Mastodon instance or one of our services refused the request. */
  refused: 3,
  /** The device directory: missing, damaged, of another format, busy, not writable. */
  store: 4,
  /** Wrong passphrase or recovery key, or a backup file that is damaged. */
  secret: 5,
  /** Ctrl-C while waiting for input, or a second Ctrl-C during a command (main.ts). */
  interrupted: 130,
  /** A bug: please report it. */
  internal: 70,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  usage: bad arguments, unknown group, not possible from this device
  2  a Mastodon instance or an mls service could not be reached
  3  a Mastodon instance or an mls service refused the request
  4  local device directory: missing, damaged, busy, other format
  5  wrong passphrase or recovery key, damaged backup file
 70  internal error (a bug)
130  interrupted (Ctrl-C at a prompt; a second Ctrl-C during a command)`;

/**
 * `sync` could not read some hubs; each failure is on stderr already. Exit 2: a script must not take an
 * unreadable hub for "nothing new".
 */
export class HubsUnreadError extends Error {
  constructor(readonly hubs: string[]) {
    super(
      `${hubs.length === 1 ? "a hub" : `${hubs.length} hubs`} could not be read (above): ` +
        "not everything new was fetched",
    );
    this.name = "HubsUnreadError";
  }
}

export interface Explained {
  code: number;
  message: string;
  hint?: string;
}

const STORE_CODES = new Set([
  "no_device",
  "device_exists",
  "device_busy",
  "directory_changed",
  "needs_migration",
  "bad_key_derivation",
]);
const USAGE_CODES = new Set([
  "unknown_group",
  "group_left",
  "not_a_member",
  "bad_input",
  "invalid_service_url",
  "passphrase_required",
  "no_account_key",
  "bad_link_code",
  "account_key_exists",
  "link_timeout",
  // a group this device cannot follow (fork, retention): the message says what to do
  "group_stuck",
  "needs_readd",
]);

const PROTOCOL_HINTS: Partial<Record<string, string>> = {
  invalid_token:
    "Your Mastodon token was refused (revoked or expired). Log in again: mls-dm login <instance>",
  insufficient_scope: "Your Mastodon token lacks a scope mls-dm needs. Log in again: mls-dm login <instance>",
  acct_mismatch: "The token belongs to another account than this device. Log in as the right account.",
  not_a_member: "This device is no longer a member of that group.",
  unknown_group: "The hub does not know that group (any more).",
  rate_limited: "Too many requests: wait a minute and try again.",
  group_full: "The group has reached its member limit.",
  screening_failed: "The hub refused the message as malformed; this is likely a bug in mls-dm.",
  unknown_device:
    "The directory does not know this device; set it up again (mls-dm init) or restore from backup.",
};

/**
 * The exit code, message and advice for anything a command can throw, fit for the terminal: a message
 * may quote a service or another person (safeText).
 */
export function explain(e: unknown): Explained {
  const { code, message, hint } = explainRaw(e);
  return {
    code,
    message: safeText(message),
    ...(hint === undefined ? {} : { hint: safeText(hint) }),
  };
}

function explainRaw(e: unknown): Explained {
  if (e instanceof UsageError) return { code: EXIT.usage, message: e.message };
  if (e instanceof Interrupted) return { code: EXIT.interrupted, message: "interrupted" };
  if (e instanceof HubsUnreadError) {
    return {
      code: EXIT.unreachable,
      message: e.message,
      hint:
        "Nothing was lost: what they hold waits there for the next sync. If it keeps failing, tell the " +
        "admin of the instance that runs the hub.",
    };
  }
  if (e instanceof MastodonError) {
    return e.kind === "unreachable"
      ? {
          code: EXIT.unreachable,
          message: e.message,
          hint: "Check the instance name and your network; nothing was changed. Try again later.",
        }
      : { code: EXIT.refused, message: e.message };
  }
  if (e instanceof ServiceUnavailableError) {
    return {
      code: EXIT.unreachable,
      message: e.message,
      hint:
        `The ${e.service} did not answer as expected. Nothing was lost: try again later; if it keeps ` +
        "failing, tell the admin of the instance that runs it.",
    };
  }
  if (e instanceof ProtocolError) {
    const where = e instanceof ServiceRefusedError ? `the ${e.service} at ${e.url}` : "a service";
    const transient = ["mastodon_unavailable", "store_unavailable", "shutting_down"].includes(e.code);
    return {
      code: transient ? EXIT.unreachable : EXIT.refused,
      message: `${where} refused (${e.code}): ${e.message}`,
      ...(transient
        ? { hint: "The service is temporarily unable to serve; nothing was lost, try again later." }
        : PROTOCOL_HINTS[e.code] !== undefined
          ? { hint: PROTOCOL_HINTS[e.code]! }
          : {}),
    };
  }
  if (e instanceof StoreFormatError) {
    return {
      code: EXIT.store,
      message: e.message,
      hint: `Nothing else was changed. ${damagedFileAdvice(e.path)}`,
    };
  }
  if (e instanceof ClientError) {
    if (e.code === "wrong_passphrase" || e.code === "wrong_backup_secret" || e.code === "bad_backup") {
      return { code: EXIT.secret, message: e.message, hint: "Nothing was changed; try again." };
    }
    if (e.code === "commit_outcome_unknown") {
      return { code: EXIT.unreachable, message: e.message };
    }
    if (e.code === "message_outcome_unknown") {
      return {
        code: EXIT.unreachable,
        message: e.message,
        hint:
          "Do not send it again yet: `mls-dm sync` (or `listen`) shows it in the history if the hub took " +
          "it, or says it was NOT sent (two minutes after it was encrypted, at the latest).",
      };
    }
    if (e.code === "commit_conflict" || e.code === "key_package_refused") {
      return { code: EXIT.refused, message: e.message, hint: "Try again in a moment." };
    }
    if (STORE_CODES.has(e.code)) return { code: EXIT.store, message: e.message };
    if (USAGE_CODES.has(e.code)) return { code: EXIT.usage, message: e.message };
    return { code: EXIT.usage, message: e.message };
  }
  const errno = (e as { code?: unknown } | undefined)?.code;
  if (typeof errno === "string" && /^E[A-Z]+$/.test(errno)) {
    return { code: EXIT.store, message: `local file system: ${e instanceof Error ? e.message : String(e)}` };
  }
  return {
    code: EXIT.internal,
    message: `internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
    hint: "This is a bug in mls-dm; please report it with the command you ran.",
  };
}

/**
 * What to do about one damaged file, and only about that one (advice about groups for store-key.json
 * sent people looking for a group that is not the problem). A copy of a group's file is never advice:
 * its state would be older than what this device already sent with, and the next messages would use key
 * generations used before (the others cannot read them).
 */
function damagedFileAdvice(path: string): string {
  const group = /^(.*[\\/]groups[\\/][^\\/]+)[\\/]/.exec(path);
  if (group === null) return `Put back a copy of ${path} if you have one.`;
  return (
    `To give up this group, move its directory (${group[1]}) out of the device directory; its members ` +
    "can add you again."
  );
}
