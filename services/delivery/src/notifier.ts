// Wakes the open streams of devices that may have something new. In-process for now: a later
// RedisNotifier publishes the same events over Redis pub/sub so that a message accepted by one replica
// reaches sockets held by another (DESIGN §6, scale-out). Events carry no message data, only who to wake.

export type InboxEvent =
  /** Something was appended to a group these devices read (members, added and removed devices). */
  | { kind: "devices"; devices: readonly string[] }
  /** An invitation was queued for this account. */
  | { kind: "account"; acct: string };

export interface Notifier {
  publish(event: InboxEvent): void;
  /** Returns the function that unsubscribes. */
  subscribe(listener: (event: InboxEvent) => void): () => void;
}

export class LocalNotifier implements Notifier {
  private readonly listeners = new Set<(event: InboxEvent) => void>();

  publish(event: InboxEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  subscribe(listener: (event: InboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
