/**
 * Runs tasks one at a time, in call order. Every public operation of a device goes through one of these:
 * a group's state is an immutable value that each step replaces, so two steps interleaving on the same
 * state would lose one's result (or reuse a key generation).
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
