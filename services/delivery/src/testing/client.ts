import { signRequest, type DeviceSigner } from "@mastodon-mls/bridge";
import { toBase64url, type InboxResponse } from "@mastodon-mls/protocol";

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  // Tests look into answers freely.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export interface RequestOptions {
  /** Raw body bytes (sent as-is with `contentType`); otherwise `json` is serialised. */
  raw?: Uint8Array;
  json?: unknown;
  contentType?: string;
  /** Send exactly this Authorization header (e.g. a replay); otherwise a fresh signature. */
  authorization?: string | null;
}

/** A device talking to a hub over real HTTP, signing every request for the hub's public origin. */
export class HubClient {
  lastAuthorization = "";

  constructor(
    readonly baseUrl: string,
    readonly origin: string,
    readonly signer: DeviceSigner,
  ) {}

  async request(method: string, path: string, opts: RequestOptions = {}): Promise<Answer> {
    const body =
      opts.raw ?? (opts.json === undefined ? undefined : new TextEncoder().encode(JSON.stringify(opts.json)));
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = opts.contentType ?? "application/json";
    const authorization =
      opts.authorization === undefined
        ? await signRequest(this.signer, { method, origin: this.origin, pathAndQuery: path, body })
        : opts.authorization;
    if (authorization !== null) headers.authorization = authorization;
    this.lastAuthorization = authorization ?? "";
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : Buffer.from(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    const answer: Answer = { status: res.status, body: parsed };
    const answerHeaders: Record<string, string> = {};
    res.headers.forEach((value, name) => {
      answerHeaders[name] = value;
    });
    // Not enumerable: tests compare answers with toEqual({status, body}).
    Object.defineProperty(answer, "headers", { value: answerHeaders, enumerable: false });
    return answer;
  }

  createGroup(groupId: string): Promise<Answer> {
    return this.request("POST", "/v1/groups", { json: { group_id: groupId, ciphersuite: 1 } });
  }

  submit(groupId: string, message: Uint8Array, welcome?: Uint8Array): Promise<Answer> {
    return this.request("POST", `/v1/groups/${groupId}/messages`, {
      json: { message: toBase64url(message), ...(welcome ? { welcome: toBase64url(welcome) } : {}) },
    });
  }

  async inbox(after?: string, limit?: number): Promise<InboxResponse & { status: number }> {
    const q = new URLSearchParams();
    if (after !== undefined) q.set("after", after);
    if (limit !== undefined) q.set("limit", String(limit));
    const qs = q.toString();
    const a = await this.request("GET", `/v1/inbox${qs ? `?${qs}` : ""}`);
    if (a.status !== 200) throw new Error(`inbox: ${a.status} ${JSON.stringify(a.body)}`);
    return { ...(a.body as InboxResponse), status: a.status };
  }

  ack(cursor: string): Promise<Answer> {
    return this.request("POST", "/v1/inbox/ack", { json: { cursor } });
  }

  invite(acct: string, hub: string, groupId: string): Promise<Answer> {
    return this.request("POST", "/v1/invitations", { json: { acct, hub, group_id: groupId } });
  }
}
