/** Small async helpers for tests: bounded polling, deferred promises, timeouts. */

export interface WaitForOptions {
  /** Give up after this many milliseconds in total (default 5000). */
  timeoutMs?: number;
  /** Pause between two attempts (default 25). */
  intervalMs?: number;
  /** Describes what was awaited; used in the timeout error. A function is evaluated at timeout. */
  message?: string | (() => string);
  /** Stops polling early; the returned promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export class WaitForTimeoutError extends Error {
  override readonly name = "WaitForTimeoutError";
  readonly lastError: unknown;
  constructor(message: string, lastError: unknown) {
    super(message, lastError === undefined ? undefined : { cause: lastError });
    this.lastError = lastError;
  }
}

/**
 * Polls `predicate` until it returns a truthy value, and resolves with that value.
 * A throwing/rejecting predicate counts as "not yet" (its last error is reported on timeout).
 * The whole wait, including a predicate call that never settles, is bounded by `timeoutMs`.
 */
export async function waitFor<T>(
  predicate: () => T | PromiseLike<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const { timeoutMs = 5000, intervalMs = 25, message, signal } = options;
  const started = Date.now();
  const deadline = started + timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  signal?.throwIfAborted();

  return new Promise<NonNullable<T>>((resolve, reject) => {
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (fn: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(overall);
      signal?.removeEventListener("abort", onAbort);
      fn();
    };
    const onAbort = (): void => {
      const reason: unknown = signal?.reason;
      finish(() =>
        reject(reason instanceof Error ? reason : new Error(`waitFor aborted: ${String(reason)}`)),
      );
    };
    const onTimeout = (): void => {
      const what = typeof message === "function" ? safeCall(message) : (message ?? "condition");
      const last = lastError === undefined ? "" : `; last error: ${describeError(lastError)}`;
      finish(() =>
        reject(
          new WaitForTimeoutError(
            `waitFor timed out after ${timeoutMs} ms (${attempts} attempts): ${what}${last}`,
            lastError,
          ),
        ),
      );
    };
    const overall = setTimeout(onTimeout, timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });

    const attempt = (): void => {
      attempts += 1;
      let result: T | PromiseLike<T>;
      try {
        result = predicate();
      } catch (err) {
        lastError = err;
        schedule();
        return;
      }
      Promise.resolve(result).then(
        (value) => {
          if (value) finish(() => resolve(value));
          else schedule();
        },
        (err: unknown) => {
          lastError = err;
          schedule();
        },
      );
    };
    const schedule = (): void => {
      if (done) return;
      const wait = Math.max(0, Math.min(intervalMs, deadline - Date.now()));
      timer = setTimeout(attempt, wait);
    };
    attempt();
  });
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T | PromiseLike<T>): void;
  reject(reason?: unknown): void;
  /** True once resolve or reject has been called. */
  readonly settled: boolean;
}

/** A promise with its resolve/reject exposed (Promise.withResolvers is Node 22+). */
export function deferred<T = void>(): Deferred<T> {
  let resolveFn!: (value: T | PromiseLike<T>) => void;
  let rejectFn!: (reason?: unknown) => void;
  let settled = false;
  const promise = new Promise<T>((res, rej) => {
    resolveFn = res;
    rejectFn = rej;
  });
  return {
    promise,
    resolve(value) {
      settled = true;
      resolveFn(value);
    },
    reject(reason) {
      settled = true;
      rejectFn(reason);
    },
    get settled() {
      return settled;
    },
  };
}

/** Rejects with a clear error if `promise` has not settled within `timeoutMs`. */
export async function withTimeout<T>(
  promise: PromiseLike<T>,
  timeoutMs: number,
  message: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${message}`)), timeoutMs);
  });
  try {
    return await Promise.race([Promise.resolve(promise), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

function safeCall(fn: () => string): string {
  try {
    return fn();
  } catch (err) {
    return `<message() threw: ${describeError(err)}>`;
  }
}
