import QRCode from "qrcode";
import { MlsDmClient } from "../client.js";
import { ClientError } from "../errors.js";
import { decodeLinkCode, verifyLinkRequest } from "../link/code.js";
import type { Cli } from "./context.js";
import { keyPackageCount, prepareNewDevice, type NewDeviceOptions } from "./commands.js";
import { Interrupted, UsageError, safeText, withProgress } from "./io.js";
import { pause } from "../util/pause.js";

// mls-dm link-device: on a new device, show a link code and wait to be approved; with --approve on a
// device holding the account key, approve one and add the new device to every group
// (docs/protocol.md "Linking a device").

export interface LinkCliOptions extends NewDeviceOptions {
  approve?: string;
  confirmCode?: string;
  timeout?: string;
  qr: boolean;
  json?: boolean;
}

const POLL_MS = 2000;

function timeoutMs(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback * 1000;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new UsageError("--timeout must be 1…3600 seconds");
  return n * 1000;
}

export async function linkDevice(cli: Cli, opts: LinkCliOptions, signal: AbortSignal): Promise<void> {
  try {
    if (opts.approve !== undefined) await approve(cli, opts.approve, opts, signal);
    else await newDevice(cli, opts, signal);
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw new Interrupted();
    throw e;
  }
}

async function newDevice(cli: Cli, opts: LinkCliOptions, signal: AbortSignal): Promise<void> {
  const keyPackages = keyPackageCount(opts.keyPackages);
  const wait = timeoutMs(opts.timeout, 600);
  const prepared = await prepareNewDevice(cli, opts);
  if ("existing" in prepared) {
    cli.io.out(`Device ${prepared.existing.deviceId} of ${prepared.existing.acct} is ready.`);
    return;
  }
  const { store, session } = prepared;
  const setup = {
    acct: session.acct,
    mastodonToken: session.mastodonToken,
    mastodonUrl: session.instanceUrl,
    ...(opts.name === undefined ? {} : { deviceName: opts.name }),
    ...(keyPackages === undefined ? {} : { keyPackages }),
  };
  const pending = await MlsDmClient.beginLink(store, setup);
  if (opts.json === true) {
    cli.io.out(
      JSON.stringify({ code: pending.code, confirmation: pending.confirmation, deviceId: pending.deviceId }),
    );
  } else {
    cli.io.err(`Link code for a new device of ${pending.acct}:`);
    cli.io.out(pending.code);
    if (opts.qr) cli.io.out(await QRCode.toString(pending.code, { type: "utf8", errorCorrectionLevel: "M" }));
    cli.io.out(`Confirmation code: ${pending.confirmation}`);
    cli.io.err(
      "On a device that holds your account key, run\n" +
        "  mls-dm link-device --approve <the code above>\n" +
        "and type the confirmation code when it asks. Waiting for it (Ctrl-C stops; running this again " +
        "resumes with the same device key)…",
    );
  }
  const client = await MlsDmClient.finishLink(
    store,
    { ...setup, services: cli.resolver(session) },
    { timeoutMs: wait, pollMs: POLL_MS, signal },
  );
  if (opts.json === true) {
    cli.io.out(
      JSON.stringify({
        linked: true,
        acct: client.acct,
        deviceId: client.deviceId,
        accountKey: client.accountKeyFingerprint,
      }),
    );
    return;
  }
  cli.io.out(`Device ${client.deviceId} of ${client.acct} is linked and ready.`);
  // LNK-12: the one check of the account key this device was given that its home servers cannot fake.
  cli.io.out(`Account key: ${client.accountKeyFingerprint}`);
  cli.io.err(
    "Compare it with the account key your other device showed when approving: if they differ, the " +
      "servers gave this device another key; revoke it there (mls-dm revoke-device) and do not use it.",
  );
  cli.io.err(
    `Your other device adds it to your groups; their messages arrive from then on (${cli.cmd("listen")}).`,
  );
}

async function approve(cli: Cli, code: string, opts: LinkCliOptions, signal: AbortSignal): Promise<void> {
  const wait = timeoutMs(opts.timeout, 120);
  const text = code === "-" ? (await cli.io.readLine("Link code: ")).trim() : code;
  const { client } = await cli.openClient();
  if (!client.holdsAccountKey) {
    throw new ClientError(
      "no_account_key",
      "this device does not hold the account key: approve the link on the device that does (the first " +
        "one, or one restored from a backup)",
    );
  }
  // Shown before anything changes, so the person can tell which device they are about to trust.
  const request = verifyLinkRequest(decodeLinkCode(text), client.acct, Math.floor(Date.now() / 1000));
  cli.io.err(`Linking the device "${safeText(request.name)}" (${request.deviceId}) to ${client.acct}.`);
  const typed =
    opts.confirmCode ??
    (cli.io.stdinIsTty
      ? await cli.io.readLine("Type the confirmation code the new device shows: ")
      : (() => {
          throw new UsageError("give --confirm-code <the code the new device shows>, or run in a terminal");
        })());
  const approval = await withProgress(
    cli.io,
    "Publishing the new device list and profile proof, certifying the device",
    () => client.approveLink(text, typed),
  );
  cli.io.err(`Approved: device ${approval.deviceId} is in your device list (version ${approval.version}).`);
  const active = client.groups().filter((g) => g.status === "active").length;
  const added = new Set<string>();
  const deadline = Date.now() + wait;
  // The new device uploads its KeyPackages once it has its certificate: until then it cannot be added.
  const pending = await withProgress(cli.io, `Adding the new device to your ${groups(active)}`, async () => {
    for (;;) {
      const results = await client.addOwnDevices();
      const waiting = results.filter((r) => !r.added.includes(approval.deviceId));
      for (const r of results) if (r.added.includes(approval.deviceId)) added.add(r.groupId);
      if (waiting.length === 0 || Date.now() + POLL_MS > deadline) return waiting.length;
      await pause(POLL_MS, signal);
    }
  });
  const result = {
    deviceId: approval.deviceId,
    version: approval.version,
    accountKey: approval.accountKey,
    addedTo: [...added],
    pending,
  };
  if (opts.json === true) {
    cli.io.out(JSON.stringify(result));
    return;
  }
  cli.io.out(`Linked device ${approval.deviceId}; added it to ${groups(added.size)}.`);
  cli.io.out(`Account key: ${approval.accountKey} (the new device must show the same; LNK-12)`);
  if (pending > 0) {
    cli.io.err(
      `${pending} groups are still waiting for the new device's KeyPackages; this device adds it there ` +
        `on its next sync (${cli.cmd("sync")}, or while ${cli.cmd("listen")} runs).`,
    );
  }
}

function groups(n: number): string {
  return n === 1 ? "1 group" : `${n} groups`;
}
