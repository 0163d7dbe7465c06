// Tells the open streams — on this replica and on every other one — that something new may be waiting.
// LocalNotifier is one process; RedisNotifier (redisNotifier.ts) carries the same events over Redis
// pub/sub between replicas (DESIGN §6, scale-out).
//
// A group event carries the new log entry when it is small, so a stream that is exactly one entry behind
// pushes it without reading the store; any other stream re-reads its inbox from the store, which stays the
// only source of truth (a lost or reordered event delays a push, it never loses or reorders an item).

/** An entry was appended to a group's log. */
export interface GroupEvent {
  kind: "group";
  groupId: string;
  seq: number;
  epoch: number;
  sender: string;
  /** ms since the Unix epoch, when accepted. */
  at: number;
  /** The MLSMessage, base64url, when small enough to travel with the event. */
  message?: string | undefined;
  /**
   * Devices whose membership this entry changed (added, removed), or undefined. They re-read their inbox;
   * added devices are not yet listening to the group, so the event also goes to their device topics.
   */
  changed?: readonly string[] | undefined;
  /** A notice that is not an MLS message (a fork): every member re-reads its inbox. */
  notice?: boolean | undefined;
}

export type InboxEvent =
  | GroupEvent
  /** Something for these devices (e.g. a group they were just added to). */
  | { kind: "devices"; devices: readonly string[] }
  /** An invitation was queued for this account. */
  | { kind: "account"; acct: string }
  /** Events may have been lost (the replica's pub/sub connection dropped): every stream re-reads. */
  | { kind: "resync" };

/** What a replica listens to: `g:<groupId>`, `d:<deviceId>`, `a:<acct>`. */
export type Topic = string;
export const groupTopic = (groupId: string): Topic => `g:${groupId}`;
export const deviceTopic = (device: string): Topic => `d:${device}`;
export const accountTopic = (acct: string): Topic => `a:${acct}`;

/** The topics an event is for. */
export function topicsOf(e: InboxEvent): Topic[] {
  switch (e.kind) {
    case "group":
      return [groupTopic(e.groupId), ...(e.changed ?? []).map(deviceTopic)];
    case "devices":
      return e.devices.map(deviceTopic);
    case "account":
      return [accountTopic(e.acct)];
    case "resync":
      return [];
  }
}

export interface Notifier {
  publish(event: InboxEvent): void;
  /** Returns the function that unsubscribes. */
  subscribe(listener: (event: InboxEvent) => void): () => void;
  /**
   * Events for this topic reach this replica's listeners from when the promise resolves. Counted: a
   * topic watched twice is unwatched twice.
   */
  watch(topic: Topic): Promise<void>;
  unwatch(topic: Topic): void;
  close(): Promise<void>;
}

/** One process: every event reaches every listener (each filters by what it holds). */
export class LocalNotifier implements Notifier {
  private readonly listeners = new Set<(event: InboxEvent) => void>();

  publish(event: InboxEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  subscribe(listener: (event: InboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async watch(): Promise<void> {}

  unwatch(): void {}

  async close(): Promise<void> {}
}
