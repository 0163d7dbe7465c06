import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { MemoryNonceStore, decodeMlsMessageStrict, sha256, verifyRequest } from "@mastodon-mls/bridge";
import { fromBase64url, toBase64url } from "@mastodon-mls/protocol";

// Test support: one local HTTP server playing a directory (registration, uploads) and a hub (groups,
// messages with the first-commit-wins rule, inbox) just far enough to exercise the client's commit
// bookkeeping, with a script deciding each submission's fate. Not a model of the real services.

export type SubmitAction =
  | "accept"
  /** Accept, then cut the connection before answering: the client never sees its 201. */
  | "accept-then-drop"
  /** Accept, then answer 503 as a hub does when its store committed but the reply to it was lost. */
  | "accept-then-503"
  | { status: number; body: Record<string, unknown> };

export interface Submission {
  groupId: string;
  bytes: Uint8Array;
  isCommit: boolean;
  epoch: number;
}

interface Logged {
  group_id: string;
  seq: number;
  epoch: number;
  sender: string;
  message: string;
}

export class FakeServices {
  private server: Server | undefined;
  url = "";
  readonly submissions: Submission[] = [];
  /** Decides the fate of each submission; default: the hub's real rule. */
  script: (s: Submission) => SubmitAction = () => "accept";
  /** Whether a device's own messages come back in its inbox. */
  echoOwn = true;
  /** Fork reports (POST …/commit-rejected), as received. */
  readonly forkReports: { groupId: string; reporter: string; body: Record<string, unknown> }[] = [];
  /** Departures (POST …/departure) taken. The fake keeps delivering: it models no membership. */
  readonly departures: { groupId: string; device: string }[] = [];
  /** The next this many departures are answered 503, as by a hub whose store is down. */
  failDepartures = 0;
  /** KeyPackages (MLSMessage bytes) handed out by POST /v1/claims, by `user@domain`. */
  readonly keyPackages = new Map<string, { deviceId: string; keyPackage: Uint8Array }>();
  private readonly groups = new Map<string, { epoch: number; seq: number; winners: Map<number, string> }>();
  private readonly log: Logged[] = [];
  private readonly nonces = new MemoryNonceStore();

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.handle(req, Buffer.concat(chunks), res).catch((e: unknown) => {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "internal", message: String(e) }));
        });
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  epochOf(groupId: string): number | undefined {
    return this.groups.get(groupId)?.epoch;
  }

  /**
   * Puts a message into the group's log as if another member had submitted it, bypassing the hub's rules
   * (a test decides its order and content).
   */
  inject(
    groupId: string,
    sender: string,
    message: Uint8Array,
    epoch: number,
    opts: { commit?: boolean } = {},
  ): number {
    const group = this.groups.get(groupId)!;
    group.seq++;
    // A commit accepted for the current epoch moves the hub's epoch on, as the real rule would.
    if (opts.commit === true && epoch === group.epoch) {
      group.winners.set(epoch, toBase64url(sha256(message)));
      group.epoch++;
    }
    this.log.push({ group_id: groupId, seq: group.seq, epoch, sender, message: toBase64url(message) });
    return group.seq;
  }

  /** The last Welcome submitted with a commit. */
  lastWelcome: Uint8Array | undefined;

  private async device(req: IncomingMessage, body: Buffer): Promise<string> {
    const cert = await verifyRequest(
      req.headers.authorization,
      { method: req.method!, origin: this.url, pathAndQuery: req.url!, body },
      { nonces: this.nonces },
    );
    return cert.deviceIdText;
  }

  private async handle(req: IncomingMessage, body: Buffer, res: ServerResponse): Promise<void> {
    const send = (status: number, json: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(json));
    };
    const url = new URL(req.url!, this.url);
    const json = body.byteLength > 0 ? (JSON.parse(body.toString("utf8")) as Record<string, unknown>) : {};
    if (req.method === "PUT" && url.pathname.startsWith("/v1/devices/")) {
      return send(200, { acct: "alice@a.test", device_id: url.pathname.split("/")[3] });
    }
    if (req.method === "GET" && /^\/v1\/devices\/[A-Za-z0-9_-]+\/keypackages\/count$/.test(url.pathname)) {
      // This stand-in hands out the same KeyPackage again and again: it never runs low.
      await this.device(req, body);
      return send(200, { count: 100, last_resort: true });
    }
    if (req.method === "POST" && url.pathname.endsWith("/keypackages")) {
      const n = (json.key_packages as unknown[]).length;
      return send(200, { stored: n, count: n, last_resort: true });
    }
    if (req.method === "POST" && url.pathname === "/v1/claims") {
      await this.device(req, body);
      const accounts = (json.accounts as string[]).map((acct) => {
        const kp = this.keyPackages.get(acct);
        return kp
          ? {
              acct,
              status: "ok",
              key_packages: [
                { device_id: kp.deviceId, key_package: toBase64url(kp.keyPackage), last_resort: false },
              ],
              exhausted: [],
            }
          : { acct, status: "no_devices", key_packages: [], exhausted: [] };
      });
      return send(200, { accounts });
    }
    if (req.method === "POST" && url.pathname === "/v1/invitations") {
      await this.device(req, body);
      return send(201, { queued: true });
    }
    if (req.method === "POST" && url.pathname === "/v1/groups") {
      await this.device(req, body);
      this.groups.set(json.group_id as string, { epoch: 0, seq: -1, winners: new Map() });
      return send(201, { group_id: json.group_id, epoch: 0 });
    }
    const submit = /^\/v1\/groups\/([A-Za-z0-9_-]+)\/messages$/.exec(url.pathname);
    if (req.method === "POST" && submit) {
      const sender = await this.device(req, body);
      const groupId = submit[1]!;
      const group = this.groups.get(groupId)!;
      const bytes = fromBase64url(json.message as string);
      const msg = decodeMlsMessageStrict(bytes);
      const isCommit =
        msg.wireformat === "mls_public_message" && msg.publicMessage.content.contentType === "commit";
      const epoch = Number(
        msg.wireformat === "mls_public_message"
          ? msg.publicMessage.content.epoch
          : msg.wireformat === "mls_private_message"
            ? msg.privateMessage.epoch
            : -1,
      );
      const s: Submission = { groupId, bytes, isCommit, epoch };
      this.submissions.push(s);
      const action = this.script(s);
      if (typeof action === "object") return send(action.status, action.body);
      if (isCommit && epoch !== group.epoch) {
        return send(409, {
          error: "wrong_epoch",
          message: "Another commit won this epoch.",
          epoch: group.epoch,
          commit_hash: group.winners.get(epoch) ?? null,
        });
      }
      if (typeof json.welcome === "string") this.lastWelcome = fromBase64url(json.welcome);
      group.seq++;
      if (isCommit) {
        group.winners.set(epoch, toBase64url(sha256(bytes)));
        group.epoch++;
      }
      this.log.push({ group_id: groupId, seq: group.seq, epoch, sender, message: json.message as string });
      if (action === "accept-then-drop") {
        req.socket.destroy();
        return;
      }
      if (action === "accept-then-503") {
        return send(503, { error: "store_unavailable", message: "The storage backend is unavailable." });
      }
      return send(201, { seq: group.seq, epoch: group.epoch });
    }
    const departure = /^\/v1\/groups\/([A-Za-z0-9_-]+)\/departure$/.exec(url.pathname);
    if (req.method === "POST" && departure) {
      if (this.failDepartures > 0) {
        this.failDepartures--;
        return send(503, { error: "store_unavailable", message: "The storage backend is unavailable." });
      }
      this.departures.push({ groupId: departure[1]!, device: await this.device(req, body) });
      return send(200, { departed: true, leaf: null });
    }
    const rejected = /^\/v1\/groups\/([A-Za-z0-9_-]+)\/commit-rejected$/.exec(url.pathname);
    if (req.method === "POST" && rejected) {
      // The hub's rule (D5): only the commit that won the epoch can be reported.
      const reporter = await this.device(req, body);
      const groupId = rejected[1]!;
      this.forkReports.push({ groupId, reporter, body: json });
      if (this.groups.get(groupId)?.winners.get(json.epoch as number) !== json.commit_hash) {
        return send(404, {
          error: "unknown_commit",
          message: "No accepted commit with this hash ended that epoch.",
        });
      }
      // Recorded, but no `forked` notice goes into the log: no test here needs one.
      const commit = this.log.find(
        (m) => m.group_id === groupId && toBase64url(sha256(fromBase64url(m.message))) === json.commit_hash,
      )!;
      const fork = {
        seq: commit.seq,
        epoch: json.epoch,
        commit_hash: json.commit_hash,
        commit_seq: commit.seq,
        sender: commit.sender,
        reporter,
        reason: json.reason,
      };
      return send(201, { forked: true, fork });
    }
    if (req.method === "GET" && url.pathname === "/v1/inbox") {
      const me = await this.device(req, body);
      const after = Number(url.searchParams.get("after") ?? "0");
      const items = this.log
        .map((m, i) => ({ ...m, kind: "message" as const, cursor: String(i + 1) }))
        .slice(after)
        .filter((m) => this.echoOwn || m.sender !== me);
      return send(200, { items, cursor: String(this.log.length), more: false });
    }
    if (req.method === "POST" && url.pathname === "/v1/inbox/ack") {
      await this.device(req, body);
      return send(200, { acked: true });
    }
    send(404, { error: "not_found", message: "Not found." });
  }
}
