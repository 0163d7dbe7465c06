/** Runs tasks with at most `n` of them in flight, starting them in call order. */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      const wake = waiting.shift();
      if (wake !== undefined) wake();
      else running--;
    }
  };
}

/**
 * `fn` over `items` with at most `limit` running at once; results in the order of `items`. The first
 * failure rejects the whole (the others still run to their end, their results dropped).
 */
export function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const run = limiter(limit);
  return Promise.all(items.map((item) => run(() => fn(item))));
}
