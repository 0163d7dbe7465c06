import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { LookupFunction } from "node:net";
import { exchange, signRequest, type DeviceSigner, type HttpAnswer } from "@mastodon-mls/bridge";
import { ErrorBodySchema, isErrorCode } from "@mastodon-mls/protocol";
import type { z } from "zod";
import { ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import { publicOnlyLookup, refusedLiteral, type Reach } from "./publicReach.js";

export type Auth =
  { kind: "none" } | { kind: "device"; signer: DeviceSigner } | { kind: "bearer"; token: string };

export interface RequestSpec<T> {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** Path and query, starting with "/", exactly as it goes on the wire (it is what gets signed). */
  path: string;
  body?: unknown;
  auth: Auth;
  response: z.ZodType<T>;
}

const TIMEOUT_MS = 30_000;
/** Our largest answers are inbox pages of MLS messages; anything much bigger is not our protocol. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

// Connections to our services are kept open between requests (idle ones do not keep a process alive),
// and closed after 4 s unused: before a server or proxy closes them (Node's servers after 5 s), so a
// request is not sent on a connection being closed under it.
const IDLE_MS = 4_000;
const agents = {
  http: new HttpAgent({ keepAlive: true, timeout: IDLE_MS }),
  https: new HttpsAgent({ keepAlive: true, timeout: IDLE_MS }),
};
// Services reached at public addresses only (NET-7) have pools of their own: every connection in them was
// opened through the checking lookup, and none is shared with a URL reached at any address.
const publicAgents = {
  http: new HttpAgent({ keepAlive: true, timeout: IDLE_MS }),
  https: new HttpsAgent({ keepAlive: true, timeout: IDLE_MS }),
};

/**
 * JSON over HTTP to one of our services. A service's `{error, message}` answer is rethrown as a
 * ProtocolError with that code (extra fields such as `epoch` land in `details`); a network failure or an
 * answer that is not our protocol becomes a ServiceUnavailableError naming the service and its URL.
 */
export class ServiceHttp {
  readonly origin: string;
  private readonly lookup: LookupFunction | undefined;
  /** NET-7 for a base URL at an IP literal (the socket asks no lookup for one): known once, from the host. */
  private readonly refused: Error | undefined;

  constructor(
    /** "directory" or "delivery service": used in messages people read. */
    readonly service: string,
    /** Checked base URL without a trailing slash (see checkServiceUrl). */
    readonly baseUrl: string,
    /** Whether another party named this URL, so that only public addresses may be reached (NET-7). */
    readonly reach: Reach = "any",
  ) {
    this.origin = new URL(baseUrl).origin;
    this.lookup = reach === "any" ? undefined : publicOnlyLookup(reach.publicOnly);
    this.refused = reach === "any" ? undefined : refusedLiteral(new URL(baseUrl));
  }

  async request<T>(spec: RequestSpec<T>): Promise<T> {
    const url = new URL(`${this.baseUrl}${spec.path}`);
    const body = spec.body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(spec.body));
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (spec.auth.kind === "bearer") headers.authorization = `Bearer ${spec.auth.token}`;
    if (spec.auth.kind === "device") {
      // The signature covers the path and query exactly as sent and the exact body bytes (DESIGN §7).
      headers.authorization = await signRequest(spec.auth.signer, {
        method: spec.method,
        origin: this.origin,
        pathAndQuery: url.pathname + url.search,
        body,
      });
    }
    let res: HttpAnswer;
    try {
      if (this.refused !== undefined) throw this.refused;
      const pool = this.lookup === undefined ? agents : publicAgents;
      res = await exchange(url, {
        method: spec.method,
        headers,
        body,
        timeoutMs: TIMEOUT_MS,
        maxBytes: MAX_RESPONSE_BYTES,
        agent: url.protocol === "https:" ? pool.https : pool.http,
        ...(this.lookup === undefined ? {} : { lookup: this.lookup }),
      });
    } catch (e) {
      throw new ServiceUnavailableError(this.service, this.baseUrl, describe(e));
    }
    const json = parseJson(res.body.toString("utf8"));
    if (res.status < 200 || res.status > 299) throw this.errorFrom(res.status, json);
    const parsed = spec.response.safeParse(json);
    if (!parsed.success) {
      throw new ServiceUnavailableError(
        this.service,
        this.baseUrl,
        `${spec.method} ${spec.path} answered ${res.status} with a body that is not the expected shape`,
        res.status,
      );
    }
    return parsed.data;
  }

  private errorFrom(status: number, json: unknown): Error {
    const body = ErrorBodySchema.safeParse(json);
    if (body.success && isErrorCode(body.data.error)) {
      const { error, message, ...details } = body.data;
      return new ServiceRefusedError(
        this.service,
        this.baseUrl,
        error,
        message,
        Object.keys(details).length > 0 ? details : undefined,
      );
    }
    // A proxy's HTML error page or an unknown code: the service as we know it did not answer.
    return new ServiceUnavailableError(
      this.service,
      this.baseUrl,
      body.success
        ? `HTTP ${status}: ${body.data.error}: ${body.data.message}`
        : `HTTP ${status} without a protocol error body`,
      status,
    );
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}
