import { z } from "zod";
import { ProtocolError, parseAcct } from "@mastodon-mls/protocol";
import type { MastodonApi } from "./mastodonApi.js";

const InstanceAnswer = z.object({ domain: z.string().min(1).max(253) });

/**
 * The instance's LOCAL_DOMAIN, the domain of every acct it serves (it can differ from the API host).
 * Configured, or read once from `GET /api/v2/instance`; a failed read is retried on the next request.
 */
export class InstanceDomain {
  private known: string | undefined;
  private pending: Promise<string> | undefined;

  constructor(
    private readonly api: MastodonApi,
    configured?: string,
  ) {
    this.known = configured;
  }

  async get(): Promise<string> {
    if (this.known !== undefined) return this.known;
    this.pending ??= this.fetch().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async fetch(): Promise<string> {
    const answer = await this.api.get("/api/v2/instance");
    const parsed = InstanceAnswer.safeParse(answer.json);
    if (answer.status !== 200 || !parsed.success) {
      throw new ProtocolError("mastodon_unavailable", "The Mastodon instance did not say its domain.");
    }
    let domain: string;
    try {
      domain = parseAcct(`user@${parsed.data.domain}`).domain;
    } catch {
      throw new ProtocolError("mastodon_unavailable", "The Mastodon instance reported an invalid domain.");
    }
    this.known = domain;
    return domain;
  }
}
