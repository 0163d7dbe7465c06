import { toBase64url } from "@mastodon-mls/protocol";
import {
  cipherSuite,
  decodeMlsMessageStrict,
  deviceIdText,
  generateDeviceKeyPackage,
  generateSigningKeyPair,
  groupViewFromState,
  profileClientConfig,
  screenMessage,
  signDeviceCertificate,
  type DeviceSigner,
  type GeneratedKeyPackage,
  type SigningKeyPair,
} from "@mastodon-mls/bridge";
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createGroup,
  createProposal,
  emptyPskIndex,
  encodeMlsMessage,
  joinGroup,
  processMessage,
  type ClientState,
  type MLSMessage,
  type Proposal,
} from "ts-mls";

// A minimal MLS client for tests: real ts-mls states, screened like a real client before processing.

export interface PendingCommit {
  commit: Uint8Array;
  welcome: Uint8Array | undefined;
  /** Adopt the new state, once the hub accepted the commit. */
  apply(): void;
}

export class TestDevice {
  state: ClientState | undefined;
  private readonly keyPackages = new Map<string, GeneratedKeyPackage>();

  private constructor(
    readonly name: string,
    readonly domain: string,
    readonly sig: { publicKey: Uint8Array; signKey: Uint8Array },
    readonly certificate: Uint8Array,
    /** The account key that signed the certificate. */
    readonly account: SigningKeyPair,
  ) {}

  /** A device of `name@domain`, certified by `account` (a fresh account key unless given). */
  static async create(name: string, domain = "a.test", account?: SigningKeyPair): Promise<TestDevice> {
    const now = Math.floor(Date.now() / 1000);
    account ??= await generateSigningKeyPair();
    const sig = await generateSigningKeyPair();
    const certificate = await signDeviceCertificate(
      {
        identity: `acct:${name}@${domain}`,
        accountKey: account.publicKey,
        sigKey: sig.publicKey,
        notBefore: now - 60,
        notAfter: now + 86400,
      },
      account.signKey,
    );
    return new TestDevice(name, domain, sig, certificate, account);
  }

  /** The same device (same keys, same device id) with a state of its own, to be in a second group. */
  twin(): TestDevice {
    return new TestDevice(this.name, this.domain, this.sig, this.certificate, this.account);
  }

  get acct(): string {
    return `${this.name}@${this.domain}`;
  }

  get deviceId(): string {
    return deviceIdText(this.sig.publicKey);
  }

  get signer(): DeviceSigner {
    return { certificate: this.certificate, signKey: this.sig.signKey };
  }

  get leaf(): number {
    return this.mustState().privatePath.leafIndex;
  }

  get epoch(): bigint {
    return this.mustState().groupContext.epoch;
  }

  async keyPackage(): Promise<GeneratedKeyPackage> {
    const kp = await generateDeviceKeyPackage({
      identity: `acct:${this.acct}`,
      signatureKeyPair: this.sig,
      certificate: this.certificate,
    });
    this.keyPackages.set(kp.ref, kp);
    return kp;
  }

  async startGroup(groupId: Uint8Array): Promise<void> {
    const kp = await this.keyPackage();
    this.state = await createGroup(
      groupId,
      kp.publicPackage,
      kp.privatePackage,
      [],
      await cipherSuite(),
      profileClientConfig(),
    );
  }

  /** A commit of these proposals (none: a self-update), as a PublicMessage with its Welcome. */
  async commit(proposals: Proposal[] = []): Promise<PendingCommit> {
    const result = await createCommit(
      { state: this.mustState(), cipherSuite: await cipherSuite() },
      { wireAsPublicMessage: true, ratchetTreeExtension: true, extraProposals: proposals },
    );
    return {
      commit: encodeMlsMessage(result.commit),
      welcome: result.welcome
        ? encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: result.welcome })
        : undefined,
      apply: () => {
        this.state = result.newState;
      },
    };
  }

  /** A proposal as a PublicMessage; the state that holds it is adopted once the hub accepted it. */
  async propose(proposal: Proposal): Promise<{ message: Uint8Array; apply(): void }> {
    const result = await createProposal(this.mustState(), true, proposal, await cipherSuite());
    return {
      message: encodeMlsMessage(result.message),
      apply: () => {
        this.state = result.newState;
      },
    };
  }

  async join(welcomeBytes: Uint8Array): Promise<void> {
    const msg = decodeMlsMessageStrict(welcomeBytes);
    if (msg.wireformat !== "mls_welcome") throw new Error("not a Welcome");
    const kp = msg.welcome.secrets.map((s) => this.keyPackages.get(toBase64url(s.newMember))).find(Boolean);
    if (!kp) throw new Error(`${this.name}: the Welcome names none of my KeyPackages`);
    this.state = await joinGroup(
      msg.welcome,
      kp.publicPackage,
      kp.privatePackage,
      emptyPskIndex,
      await cipherSuite(),
      undefined,
      undefined,
      profileClientConfig(),
    );
  }

  async encrypt(text: string): Promise<Uint8Array> {
    const result = await createApplicationMessage(
      this.mustState(),
      new TextEncoder().encode(text),
      await cipherSuite(),
    );
    this.state = result.newState;
    return encodeMlsMessage({
      version: "mls10",
      wireformat: "mls_private_message",
      privateMessage: result.privateMessage,
    });
  }

  /** Screens, then processes, a message from someone else. Returns the text of an application message. */
  async receive(bytes: Uint8Array): Promise<string | undefined> {
    const msg: MLSMessage = decodeMlsMessageStrict(bytes);
    await screenMessage(msg, groupViewFromState(this.mustState()));
    if (msg.wireformat !== "mls_public_message" && msg.wireformat !== "mls_private_message") {
      throw new Error("not a group message");
    }
    const result = await processMessage(msg, this.mustState(), emptyPskIndex, acceptAll, await cipherSuite());
    this.state = result.newState;
    return result.kind === "applicationMessage" ? new TextDecoder().decode(result.message) : undefined;
  }

  private mustState(): ClientState {
    if (!this.state) throw new Error(`${this.name} is in no group`);
    return this.state;
  }
}

export const addOf = (kp: GeneratedKeyPackage): Proposal => ({
  proposalType: "add",
  add: { keyPackage: kp.publicPackage },
});
export const removeOf = (leaf: number): Proposal => ({ proposalType: "remove", remove: { removed: leaf } });
