import { ProtocolError } from "@mastodon-mls/protocol";
import type { Logger } from "@mastodon-mls/service-kit";
import { readBodyCapped } from "@mastodon-mls/service-kit";

/** What the instance answered: a status and, when the body was JSON, the parsed body. */
export interface MastodonAnswer {
  status: number;
  json: unknown;
}

export interface MastodonApiOptions {
  /** The instance's API origin. */
  baseUrl: string;
  timeoutMs: number;
  fetch?: typeof fetch;
  /** Failures of the instance are logged here (path and status only: never a token or a body). */
  log?: Logger;
}

/** Answers from Mastodon are small; anything bigger is not the API we expect. */
const MAX_ANSWER_BYTES = 256 * 1024;

/**
 * GETs on the one Mastodon instance this directory serves. Every transport failure (refused, reset, timed
 * out, redirected, oversized) is `mastodon_unavailable`: an unreachable instance is never a bad token.
 */
export class MastodonApi {
  private readonly fetch: typeof fetch;

  constructor(private readonly opts: MastodonApiOptions) {
    this.fetch = opts.fetch ?? globalThis.fetch;
  }

  async get(path: string, token?: string): Promise<MastodonAnswer> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const signal = AbortSignal.timeout(this.opts.timeoutMs);
    let res: Response;
    let text: string;
    try {
      // A redirect would carry the token somewhere we did not choose to send it.
      res = await this.fetch(new URL(path, this.opts.baseUrl), { headers, signal, redirect: "error" });
      text = await readBodyCapped(res, MAX_ANSWER_BYTES);
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
      this.opts.log?.warn({ path, reason: timedOut ? "timeout" : "unreachable" }, "mastodon unavailable");
      throw new ProtocolError(
        "mastodon_unavailable",
        timedOut
          ? "The Mastodon instance did not answer in time."
          : "The Mastodon instance could not be reached.",
      );
    }
    const json = parseJson(text);
    if (res.status >= 500 || json === undefined) {
      this.opts.log?.warn({ path, status: res.status, json: json !== undefined }, "mastodon answered badly");
    }
    return { status: res.status, json };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // An HTML error page from a proxy: the caller sees no JSON and treats the instance as unavailable.
    return undefined;
  }
}
