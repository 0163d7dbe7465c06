import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { ProtocolError } from "@mastodon-mls/protocol";
import { MlsDmClient } from "../client.js";
import { ClientError } from "../errors.js";
import { canonicalAccts } from "../groups/changes.js";
import type { KdfPolicy } from "../crypto/kdf.js";
import type { StoreProtection } from "../store/cipher.js";
import { DeviceStore } from "../store/deviceStore.js";
import type { SessionRecord } from "../store/schemas.js";
import { UsageError, safeText, withProgress, type Io } from "./io.js";
import { CliResolver, parseServicesMap, type ServicesMap } from "./services.js";

export interface GlobalOptions {
  dir?: string;
  servicesMap?: string;
}

/** Minimum length of a passphrase chosen here (the store's or a backup's). */
const MIN_PASSPHRASE = 8;

/** What every command needs: where the device lives, how to ask for secrets, how services are found. */
export class Cli {
  constructor(
    readonly io: Io,
    readonly globals: GlobalOptions,
  ) {}

  /** `--dir`, else MLS_DM_HOME, else $XDG_DATA_HOME/mls-dm, else ~/.local/share/mls-dm. */
  get dir(): string {
    const env = this.io.env;
    if (this.globals.dir !== undefined) return resolve(this.globals.dir);
    if (env.MLS_DM_HOME) return resolve(env.MLS_DM_HOME);
    const data = env.XDG_DATA_HOME ? env.XDG_DATA_HOME : join(homedir(), ".local", "share");
    return join(data, "mls-dm");
  }

  /**
   * A command to suggest to the user, as they can run it: with `--dir` when they gave one (the hint is
   * otherwise run on the default directory, which holds no device, or another one).
   */
  cmd(args: string): string {
    if (this.globals.dir === undefined) return `mls-dm ${args}`;
    const dir = this.dir;
    const quoted = /^[\w@%+=:,./-]+$/.test(dir) ? dir : `'${dir.replace(/'/g, "'\\''")}'`;
    return `mls-dm --dir ${quoted} ${args}`;
  }

  private policy: KdfPolicy | undefined;

  /** MLS_DM_INSECURE_TEST_KDF=1: cheap Argon2id parameters, for the test suite only. */
  get kdfPolicy(): KdfPolicy {
    if (this.policy === undefined) {
      this.policy = this.io.env.MLS_DM_INSECURE_TEST_KDF === "1" ? { insecureTestKdf: true } : {};
      if (this.policy.insecureTestKdf === true) {
        this.io.err("warning: MLS_DM_INSECURE_TEST_KDF=1: weak key derivation, for tests only");
      }
    }
    return this.policy;
  }

  servicesMapOption(): ServicesMap | undefined {
    return this.globals.servicesMap === undefined ? undefined : parseServicesMap(this.globals.servicesMap);
  }

  resolver(session: SessionRecord | undefined): CliResolver {
    const map: ServicesMap = { ...(session?.servicesMap ?? {}), ...(this.servicesMapOption() ?? {}) };
    if (session !== undefined) {
      const domain = session.acct.split("@")[1]!;
      // A development instance on loopback over plain HTTP is also where its WebFinger answers.
      const dev = session.instanceUrl.startsWith("http://") ? { mastodon: session.instanceUrl } : {};
      map[domain] = { ...dev, ...(map[domain] ?? {}), ...session.services };
    }
    return new CliResolver(map);
  }

  /** The passphrase of an existing directory: MLS_DM_PASSPHRASE, else asked (no echo). */
  async unlockPassphrase(what = "Passphrase"): Promise<string> {
    const env = this.io.env.MLS_DM_PASSPHRASE;
    if (env !== undefined) return env;
    if (!this.io.stdinIsTty) {
      throw new UsageError(
        `${this.dir} is protected by a passphrase: set MLS_DM_PASSPHRASE or run in a terminal`,
      );
    }
    return this.io.readSecret(`${what} for ${this.dir}: `);
  }

  /**
   * The protection of a new directory: a passphrase (MLS_DM_PASSPHRASE, else asked twice), or none. For a
   * new passphrase of an existing directory (`change-passphrase`), `change` takes it from
   * MLS_DM_NEW_PASSPHRASE instead: MLS_DM_PASSPHRASE is the current one there.
   */
  async newProtection(usePassphrase: boolean, change = false): Promise<StoreProtection> {
    if (!usePassphrase) {
      this.io.err(
        `warning: --no-passphrase: the account key, the Mastodon token and every group key in ${this.dir} ` +
          "are stored unencrypted, protected only by file permissions (0600). Anyone who can read your files " +
          "(a backup, a stolen disk, another admin) can read and send your messages.",
      );
      return { kind: "none" };
    }
    const envName = change ? "MLS_DM_NEW_PASSPHRASE" : "MLS_DM_PASSPHRASE";
    const outcome = change ? "nothing was changed" : "nothing was created";
    let passphrase = this.io.env[envName];
    if (passphrase === undefined) {
      if (!this.io.stdinIsTty) {
        throw new UsageError(
          change
            ? `the new passphrase: set ${envName} or run in a terminal (or --no-passphrase to remove it)`
            : `a new device directory needs a passphrase: set ${envName}, run in a terminal, or use --no-passphrase`,
        );
      }
      passphrase = await this.io.readSecret(`New passphrase for ${this.dir}: `);
      if ((await this.io.readSecret("The same again: ")) !== passphrase) {
        throw new UsageError(`the two passphrases differ; ${outcome}`);
      }
    }
    if (passphrase.length < MIN_PASSPHRASE) {
      throw new UsageError(
        `the passphrase is too short (at least ${MIN_PASSPHRASE} characters)${change ? `; ${outcome}` : ""}`,
      );
    }
    return { kind: "passphrase", passphrase };
  }

  /** A passphrase for a backup: MLS_DM_BACKUP_PASSPHRASE, else asked (twice when choosing one). */
  async backupPassphrase(confirm: boolean): Promise<string> {
    const env = this.io.env.MLS_DM_BACKUP_PASSPHRASE;
    let p = env;
    if (p === undefined) {
      if (!this.io.stdinIsTty) throw new UsageError("set MLS_DM_BACKUP_PASSPHRASE or run in a terminal");
      p = await this.io.readSecret("Backup passphrase: ");
    }
    // Choosing one: the length is checked wherever it came from (the environment too), as for the store.
    if (confirm && p.length < MIN_PASSPHRASE) {
      throw new UsageError(`the passphrase is too short (at least ${MIN_PASSPHRASE} characters)`);
    }
    if (confirm && env === undefined && (await this.io.readSecret("The same again: ")) !== p) {
      throw new UsageError("the two passphrases differ");
    }
    return p;
  }

  async createStore(protection: StoreProtection): Promise<DeviceStore> {
    const policy = this.kdfPolicy;
    return withProgress(this.io, "Deriving the key from the passphrase (Argon2id)", (report) =>
      DeviceStore.create(this.dir, protection, { ...policy, onProgress: report }),
    );
  }

  /** Unlocks the directory (asking for the passphrase if it has one). */
  async openStore(): Promise<DeviceStore> {
    const state = await DeviceStore.inspect(this.dir);
    const policy = this.kdfPolicy;
    if (state.kind === "absent" || state.kind === "empty") {
      // Where a new user lands first (a typo in --dir, or no --dir): say how a device comes to be.
      throw new ClientError(
        "no_device",
        `${this.dir} holds no device: set one up with ${this.cmd("login <instance>")} and then ` +
          `${this.cmd("init")}, or name another directory with --dir`,
      );
    }
    if (state.kind !== "store") return DeviceStore.open(this.dir, policy); // throws the right error
    const passphrase = state.protection === "passphrase" ? await this.unlockPassphrase() : undefined;
    return withProgress(this.io, `Unlocking ${this.dir} (Argon2id)`, (report) =>
      DeviceStore.open(this.dir, {
        ...policy,
        ...(passphrase === undefined ? {} : { passphrase }),
        onProgress: report,
      }),
    );
  }

  /** The device, unlocked and ready, with its login session. */
  async openClient(): Promise<{
    client: MlsDmClient;
    store: DeviceStore;
    session: SessionRecord | undefined;
  }> {
    const store = await this.openStore();
    if (!(await store.hasDevice())) {
      throw new UsageError(
        `${this.dir} holds no device yet: run ${this.cmd("init")} (after ${this.cmd("login <instance>")})`,
      );
    }
    const session = await store.readSession();
    const client = await withProgress(this.io, "Opening the device", () =>
      MlsDmClient.openStore(store, { services: this.resolver(session) }),
    );
    // Said by whichever command opened the device: the next open may have nothing left to say.
    for (const notice of client.openNotices) this.io.err(`warning: ${safeText(notice)}`);
    return { client, store, session };
  }
}

/** A group named by its id or by any unique prefix of it. */
export function resolveGroup(client: MlsDmClient, text: string): string {
  const all = client.groups().map((g) => g.groupId);
  if (all.includes(text)) return text;
  const hits = all.filter((id) => id.startsWith(text));
  if (text.length >= 4 && hits.length === 1) return hits[0]!;
  if (hits.length > 1) throw new UsageError(`${text} matches several groups: ${hits.join(", ")}`);
  throw new UsageError(`no group ${text} on this device (see mls-dm groups)`);
}

/**
 * `@user@domain` arguments as canonical `user@domain`; a malformed one is a usage error. Every command
 * taking accounts checks them first: left to the library, a typo surfaced as "a service refused
 * (invalid_acct)", exit 3, after the passphrase and sometimes after a group was made.
 */
export function canonicalAcctArgs(accts: string[]): string[] {
  try {
    return canonicalAccts(accts);
  } catch (e) {
    if (e instanceof ProtocolError) throw new UsageError(`not an account (@user@domain): ${e.message}`);
    throw e;
  }
}
