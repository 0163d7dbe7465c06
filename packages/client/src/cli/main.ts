import { Command, CommanderError, Option } from "commander";
import * as commands from "./commands.js";
import { Cli, type GlobalOptions } from "./context.js";
import { EXIT, EXIT_CODES_HELP, explain } from "./errors.js";
import { linkDevice, type LinkCliOptions } from "./link.js";
import { processIo, type Io } from "./io.js";
import { RECREATE_HELP, recreate, type RecreateCliOptions } from "./recreate.js";

// mls-dm: end-to-end encrypted group conversations for Mastodon, on MLS. The only module that reads
// argv and exits (with the codes of errors.ts).

const ENV_HELP = `Environment:
  MLS_DM_HOME                the device directory (default $XDG_DATA_HOME/mls-dm or ~/.local/share/mls-dm)
  MLS_DM_PASSPHRASE          the device directory's passphrase (else asked, without echo)
  MLS_DM_NEW_PASSPHRASE      change-passphrase: the new passphrase (else asked twice, without echo)
  MLS_DM_BACKUP_PASSPHRASE   a backup's passphrase (backup --passphrase, restore)
  MLS_DM_RECOVERY_KEY        a backup's recovery key (restore)
  MLS_DM_INSECURE_TEST_KDF=1 weak Argon2id parameters: for the test suite only, never for real use`;

const CHANGE_PASSPHRASE_HELP = `
Asks for the current passphrase (or reads MLS_DM_PASSPHRASE) and checks it, then for the new one twice
(or reads MLS_DM_NEW_PASSPHRASE). Only store-key.json is rewritten: the same data key, now under the new
passphrase. On a directory without a passphrase it sets one and encrypts every file; --no-passphrase
removes it and decrypts every file (with a warning). Crash-safe: an interrupted run leaves a directory
that opens as before or as asked, never neither; running it again finishes it. Other mls-dm commands
wait meanwhile; after encrypting or decrypting, one that had the directory open (listen) must be
started again. A wrong current passphrase exits 5 and changes nothing. The data key stays the same: a
copy of the directory taken before, with the old passphrase, still opens what is written after; if the
old passphrase leaked, remove the passphrase and set a new one (two runs), which makes a new data key.`;

export function buildProgram(io: Io, signal: AbortSignal): Command {
  const program = new Command();
  const cli = () => new Cli(io, program.opts<GlobalOptions>());
  program
    .name("mls-dm")
    .description("End-to-end encrypted group conversations for Mastodon users, on MLS (RFC 9420).")
    .version("0.1.0")
    .option("--dir <path>", "the device directory (one per device; see MLS_DM_HOME)")
    .option(
      "--services-map <json>",
      'development: where instances\' services are, {"domain": {"directory": URL, "delivery": URL}} or @file ' +
        "(saved at login/init; otherwise https://<domain>/.well-known/mls-services)",
    )
    .showHelpAfterError("(run with --help for usage)")
    // `mls-dm send --help` is where a new user looks: --dir (which device) belongs there too.
    .configureHelp({ showGlobalOptions: true })
    .addHelpText("after", `\n${EXIT_CODES_HELP}\n\n${ENV_HELP}`)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  const passphraseOption = () =>
    new Option(
      "--no-passphrase",
      "do not encrypt the device directory (files readable by you only; NOT recommended)",
    );
  const servicesOptions = (c: Command) =>
    c
      .option("--directory <url>", "this instance's key-package directory (instead of its well-known file)")
      .option("--delivery <url>", "this instance's delivery service (instead of its well-known file)");

  servicesOptions(
    program
      .command("login <instance>")
      .description("log in to your Mastodon instance (OAuth; you paste the code it shows) and keep the token")
      .option("--code <code>", "the authorization code (else read from standard input)")
      .addOption(passphraseOption()),
  ).action((instance: string, o: commands.ServiceOverrides & { code?: string; passphrase: boolean }) =>
    commands.login(cli(), instance, o),
  );

  const newDevice = (c: Command) =>
    servicesOptions(
      c
        .option("--token <token>", "a Mastodon access token (instead of mls-dm login; for scripts)")
        .option("--instance <instance>", "the Mastodon instance the token is for (with --token)")
        .option("--key-packages <n>", "KeyPackages to publish (default 20)")
        .option("--name <name>", "this device's name in your device list (default: the host name)")
        .addOption(passphraseOption()),
    );

  newDevice(
    program
      .command("init")
      .description("set up this device: a new account key, the device certificate, KeyPackages")
      .option(
        "--new-account-key",
        "your account has a key already but every device and the backup are lost: start over with a new " +
          "one (your contacts will see key-changed)",
      ),
  ).action((o: commands.NewDeviceOptions & { newAccountKey?: boolean }) => commands.init(cli(), o));

  newDevice(
    program
      .command("restore <backup-file>")
      .description("set up a new device with the account key from a backup (mls-dm backup)"),
  ).action((file: string, o: commands.NewDeviceOptions) => commands.restore(cli(), file, o));

  program
    .command("migrate")
    .description("convert a device directory of the first release (unencrypted) to the current format")
    .addOption(passphraseOption())
    .action((o: { passphrase: boolean }) => commands.migrate(cli(), o));

  program
    .command("change-passphrase")
    .description("change the device directory's passphrase (or set one, or remove it with --no-passphrase)")
    .addOption(
      new Option(
        "--no-passphrase",
        "remove the passphrase: store the directory unencrypted (files readable by you only; NOT recommended)",
      ),
    )
    .addHelpText("after", CHANGE_PASSPHRASE_HELP)
    .action((o: { passphrase: boolean }) => commands.changePassphrase(cli(), o));

  program
    .command("whoami")
    .description("this device: account, device id, directory")
    .option("--json", "machine-readable")
    .action((o: { json?: boolean }) => commands.whoami(cli(), o));

  program
    .command("groups")
    .description("the groups of this device (fetches new messages first)")
    .option("--json", "machine-readable")
    .option("--no-sync", "do not fetch new messages first")
    .action((o: { json?: boolean; sync: boolean }) => commands.groups(cli(), o));

  program
    .command("create [accts...]")
    .description("create a group with these people (@user@domain …); only verified accounts are added")
    .option("--json", "machine-readable")
    .option(
      "--allow-unverified",
      "also add people whose identity is not published (no-proof) or could not be checked (unreachable)",
    )
    .action((accts: string[], o: commands.AddCliOptions) => commands.create(cli(), accts, o));

  program
    .command("add <group> <accts...>")
    .description(
      "add people (every verified device of theirs) to a group; <group> is its id or a unique prefix",
    )
    .option("--json", "machine-readable")
    .option(
      "--allow-unverified",
      "also add people whose identity is not published (no-proof) or could not be checked (unreachable)",
    )
    .action((group: string, accts: string[], o: commands.AddCliOptions) =>
      commands.add(cli(), group, accts, o),
    );

  program
    .command("remove <group> [accts...]")
    .description("remove people (every device of theirs) or, with --device, single devices from a group")
    .option(
      "--device <ids...>",
      "remove these devices only (ids or their first 12 characters, as `members` shows them); " +
        "their accounts' other devices stay. To give a stuck device a fresh start, use readd",
    )
    .action((group: string, accts: string[], o: { device?: string[] }) =>
      commands.remove(cli(), group, accts, o.device ?? []),
    );

  program
    .command("readd <group> <devices...>")
    .description(
      "give devices of a group a fresh start in one commit: remove their leaves and add them again from " +
        "new KeyPackages (for a device stuck after a fork or behind retention); <devices> are ids or " +
        "their first 12 characters, as `members` shows them",
    )
    .option("--json", "machine-readable")
    .option(
      "--allow-unverified",
      "also re-add devices of people whose identity is not published (no-proof) or could not be checked (unreachable)",
    )
    .action((group: string, devices: string[], o: commands.AddCliOptions) =>
      commands.readd(cli(), group, devices, o),
    );

  program
    .command("leave [groups...]")
    .description(
      "leave groups: propose your removal, delete their keys here and leave them at their hub (the history stays)",
    )
    .option(
      "--with <accts...>",
      "also leave every group these people are in (@user@domain …): for groups a stranger keeps adding you to",
    )
    .action((groups: string[], o: { with?: string[] }) => commands.leave(cli(), groups, o.with ?? []));

  program
    .command("block [accts...]")
    .description(
      "decline from now on every group these people are in, and leave the groups you share with them now; " +
        "without accounts: list who is blocked",
    )
    .option("--keep", "stay in the groups you share with them now")
    .option("--json", "machine-readable (the list)")
    .action((accts: string[], o: { keep?: boolean; json?: boolean }) => commands.block(cli(), accts, o));

  program
    .command("unblock <accts...>")
    .description("take people off the block list: their groups are joined again when they add you")
    .action((accts: string[]) => commands.unblock(cli(), accts));

  program
    .command("recreate <group>")
    .description(
      "after a fork: a new group with the same people, without the sender of the commit that forked it",
    )
    .option("--without <accts...>", "leave out these accounts instead (@user@domain …)")
    .option("--json", "machine-readable ({groupId, previous, without, added, refused})")
    .option(
      "--allow-unverified",
      "also add people whose identity is not published (no-proof) or could not be checked (unreachable)",
    )
    .addHelpText("after", RECREATE_HELP)
    .action((group: string, o: RecreateCliOptions) => recreate(cli(), group, o));

  program
    .command("send <group> <text...>")
    .description('send a message ("-" reads it from standard input)')
    .action((group: string, text: string[]) => commands.send(cli(), group, text));

  program
    .command("sync")
    .description("fetch and process everything new once, and print it")
    .option("--json", "one JSON event per line")
    .action((o: { json?: boolean }) => commands.sync(cli(), o));

  program
    .command("listen")
    .description("print messages and group changes as they arrive, until Ctrl-C")
    .option("--json", "one JSON event per line, for scripts")
    .action((o: { json?: boolean }) => commands.listen(cli(), o, signal));

  program
    .command("history <group>")
    .description("the messages of a group (fetches new messages first)")
    .option("--json", "one JSON object per line")
    .option("--no-sync", "do not fetch new messages first")
    .option("--limit <n>", "only the last n")
    .action((group: string, o: { json?: boolean; sync: boolean; limit?: string }) =>
      commands.history(cli(), group, o),
    );

  program
    .command("members <group>")
    .description("the members of a group, each device with its verification status")
    .option("--json", "machine-readable")
    .option("--no-sync", "do not fetch new messages first")
    .action((group: string, o: { json?: boolean; sync: boolean }) => commands.members(cli(), group, o));

  program
    .command("backup")
    .description(
      "back up the account key (only the key: no messages, no groups), protected by a recovery key",
    )
    .option("--out <file>", "where to write it (default ./mls-dm-account-key-<you>-<date>.txt)")
    .option("--passphrase", "protect it with a passphrase of your choice instead of a generated recovery key")
    .option("--force", "overwrite an existing file")
    .option("--json", "machine-readable ({file, recoveryKey})")
    .action((o: { out?: string; passphrase?: boolean; force?: boolean; json?: boolean }) =>
      commands.backup(cli(), o),
    );

  program
    .command("verify <acct>")
    .description(
      "a contact's verification status, and the safety number (digits and QR) to compare with them",
    )
    .option("--group <group>", "also check their devices in this group and show its epoch authenticator")
    .option("--confirm", "you compared the safety numbers and they match: mark them verified-oob")
    .option("--accept-new-key", "after key-changed, once you checked with them: trust their new key")
    .option("--json", "machine-readable")
    .action((acct: string, o: commands.VerifyCliOptions) => commands.verify(cli(), acct, o));

  program
    .command("devices")
    .description("this account's devices, from the device list its directory serves (verified)")
    .option("--json", "machine-readable")
    .action((o: { json?: boolean }) => commands.devices(cli(), o));

  program
    .command("rotate-account-key")
    .description(
      "replace your account key (e.g. the old one may have leaked): your contacts' apps follow the change; " +
        "back up the new key afterwards",
    )
    .option("--json", "machine-readable")
    .action((o: { json?: boolean }) => commands.rotateAccountKey(cli(), o));

  program
    .command("revoke-device <device>")
    .description(
      "revoke one of this account's devices (id or unique prefix, 6 characters or more): a new device list and profile proof; " +
        "it is removed from your groups",
    )
    .action((device: string) => commands.revokeDevice(cli(), device));

  newDevice(
    program
      .command("link-device")
      .description(
        "on a new device: show a link code (and QR) and wait until your other device approves it; " +
          "with --approve on the device holding your account key: approve such a code",
      )
      .option("--approve <code>", 'approve a new device\'s link code ("-" reads it from standard input)')
      .option("--confirm-code <digits>", "with --approve: the confirmation code the new device shows")
      .option("--timeout <seconds>", "how long to wait (new device: 600; --approve, for its groups: 120)")
      .option("--no-qr", "do not print the link code as a QR code")
      .option("--json", "machine-readable (one JSON object per line)"),
  ).action((o: LinkCliOptions) => linkDevice(cli(), o, signal));
  return program;
}

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const abort = new AbortController();
  // The first Ctrl-C asks the command to stop: listen and link-device end at once. The others do not
  // watch the signal and may be waiting for a service (up to 30 s a request): after a second the user is
  // told so, and a second Ctrl-C quits at once, which is safe (the directory's files are replaced
  // atomically, a dead process's lock is broken, an unsettled commit or send is settled by the next run).
  let interrupts = 0;
  const stop = () => {
    interrupts += 1;
    if (interrupts > 1) process.exit(EXIT.interrupted);
    abort.abort();
    setTimeout(
      () =>
        io.err(
          "Still finishing the current step (a service may take up to 30 s to answer). " +
            "Ctrl-C again quits now; the next run settles what was under way.",
        ),
      1000,
    ).unref();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  const program = buildProgram(io, abort.signal);
  try {
    await program.parseAsync(argv, { from: "user" });
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.exitCode === 0
        ? EXIT.ok
        : EXIT.usage;
    }
    const { code, message, hint } = explain(e);
    io.err(`mls-dm: ${message}`);
    if (hint !== undefined) io.err(`  ${hint}`);
    return code;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}
