import { setTimeout as sleep } from "node:timers/promises";

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 200, maxDelayMs: 5_000 };

/**
 * "Full jitter" exponential backoff: a random delay up to base·2^attempt. Two devices that lost the same
 * race then rarely collide again (DESIGN §6: clients retry with backoff and jitter).
 */
export function backoffDelay(
  policy: RetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.floor(random() * cap);
}

export async function backoff(policy: RetryPolicy, attempt: number): Promise<void> {
  const ms = backoffDelay(policy, attempt);
  if (ms > 0) await sleep(ms);
}
