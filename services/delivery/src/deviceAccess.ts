import type { DeviceCertificate } from "@mastodon-mls/bridge";
import { ProtocolError, parseAcct } from "@mastodon-mls/protocol";
import type { DeliveryContext } from "./context.js";
import type { InboxReader } from "./inbox.js";

// What a signed request proves is that its signer holds the key of a self-issued certificate. That is
// enough for what is scoped to the device (its group memberships are keyed by its device id, which nobody
// else can sign for), but not for what is scoped to an account: the account's invitations, and sending
// invitations in its name. For those, an account of this instance must have the device registered at
// this instance's directory (directoryDevices.ts). Accounts of other instances have no invitations here,
// and their directories are not asked.

function isLocal(ctx: DeliveryContext, acct: string): boolean {
  return parseAcct(acct).domain === ctx.config.instanceDomain;
}

/**
 * Who reads an inbox: the device, and the account whose invitations it reads here — none for an
 * account of another instance, or without a directory (then nothing is queued). Throws
 * `device_not_registered` or `directory_unavailable` for a device of this instance that the directory
 * does not list or cannot be asked about: its inbox is refused as a whole.
 */
export async function inboxReader(ctx: DeliveryContext, cert: DeviceCertificate): Promise<InboxReader> {
  if (!ctx.directory || !isLocal(ctx, cert.acct)) return { device: cert.deviceIdText, acct: undefined };
  await ctx.directory.require(cert);
  return { device: cert.deviceIdText, acct: cert.acct };
}

/** Throws unless this device may send invitations in its account's name. */
export async function requireInvitationSender(ctx: DeliveryContext, cert: DeviceCertificate): Promise<void> {
  if (!ctx.directory) {
    throw new ProtocolError(
      "directory_unavailable",
      "This hub has no directory configured (DIRECTORY_URL), so it queues no invitations.",
    );
  }
  // A sender of another instance is not checked here (its directory is not this hub's to ask): its
  // `from` is only as good as a self-issued certificate. What the invitee joins is decided by the Welcome
  // waiting at the hub, never by the invitation.
  if (isLocal(ctx, cert.acct)) await ctx.directory.require(cert);
}
