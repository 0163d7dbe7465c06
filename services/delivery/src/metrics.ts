import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface DeliveryMetrics {
  /** Accepted messages by kind (commit, proposal, application) and path (http, stream). */
  messagesIn: Counter<"kind" | "path">;
  /** Refused submissions by kind and reason (an error code, or a screening rule id such as SCR-9). */
  refused: Counter<"kind" | "reason">;
  /** Inbox items handed out, by kind and path (push: read from the event, stream: read from the store, poll). */
  itemsOut: Counter<"kind" | "path">;
  /**
   * Pushed message items (itemsOut {kind: message, path: push}), counted in a plain number and added to
   * itemsOut when the metrics are read: pushes happen tens of thousands of times a second, and each
   * labelled increment builds its label key.
   */
  countPushed(items: number): void;
  /** From acceptance to the push of a message item, in seconds. */
  lag: Histogram;
  /** Open, authenticated WebSocket streams. */
  sockets: Gauge;
  /** Distinct devices with an open stream on this replica. */
  devices: Gauge;
  /** Streams closed, by close code. */
  streamsClosed: Counter<"code">;
  /** Requests refused by a rate limit, by limit. */
  rateLimited: Counter<"limit">;
  /** Fork reports that recorded a new fork. */
  forks: Counter;
  /** Departures (POST /v1/groups/:groupId/departure), repeats included. */
  departures: Counter;
  /** Log entries deleted by retention, by cause (ack: everyone read them; age: RETENTION_SECONDS). */
  retained: Counter<"cause">;
  /**
   * Invitations deleted, by cause (ack: every device the directory lists for the account acknowledged
   * them; age: RETENTION_SECONDS).
   */
  invitationsDeleted: Counter<"cause">;
  /** `behind_retention` items handed out. */
  behindRetention: Counter;
  /** Requests to the directory for an account's devices, by result (ok, unavailable). */
  directoryLookups: Counter<"result">;
  /** Devices refused for an account of this instance because its directory does not list them. */
  devicesRefused: Counter;
}

export function createDeliveryMetrics(registry: Registry): DeliveryMetrics {
  const registers = [registry];
  let pushed = 0;
  return {
    countPushed(items) {
      pushed += items;
    },
    messagesIn: new Counter({
      name: "delivery_messages_accepted_total",
      help: "Messages accepted, by kind and path",
      labelNames: ["kind", "path"],
      registers,
    }),
    refused: new Counter({
      name: "delivery_messages_refused_total",
      help: "Messages refused, by kind and reason (error code or screening rule)",
      labelNames: ["kind", "reason"],
      registers,
    }),
    itemsOut: new Counter({
      name: "delivery_items_delivered_total",
      help: "Inbox items handed to devices, by kind and path (push, stream, poll)",
      labelNames: ["kind", "path"],
      registers,
      collect() {
        if (pushed === 0) return;
        this.inc({ kind: "message", path: "push" }, pushed);
        pushed = 0;
      },
    }),
    lag: new Histogram({
      name: "delivery_lag_seconds",
      help: "Time from acceptance of a message to its push on this replica's streams (once per message)",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
      registers,
    }),
    sockets: new Gauge({
      name: "delivery_stream_sockets",
      help: "Open, authenticated WebSocket streams",
      registers,
    }),
    devices: new Gauge({
      name: "delivery_connected_devices",
      help: "Distinct devices with an open stream on this replica",
      registers,
    }),
    streamsClosed: new Counter({
      name: "delivery_streams_closed_total",
      help: "WebSocket streams closed by the server, by close code",
      labelNames: ["code"],
      registers,
    }),
    rateLimited: new Counter({
      name: "delivery_rate_limited_total",
      help: "Requests refused by a rate limit",
      labelNames: ["limit"],
      registers,
    }),
    forks: new Counter({ name: "delivery_forks_total", help: "Forks recorded", registers }),
    departures: new Counter({
      name: "delivery_departures_total",
      help: "Devices that left a group at this hub on their own (departure requests, repeats included)",
      registers,
    }),
    retained: new Counter({
      name: "delivery_retention_deleted_total",
      help: "Log entries deleted by retention, by cause (ack, age)",
      labelNames: ["cause"],
      registers,
    }),
    invitationsDeleted: new Counter({
      name: "delivery_invitations_deleted_total",
      help: "Invitations deleted, by cause (ack: every listed device of the account read them; age)",
      labelNames: ["cause"],
      registers,
    }),
    behindRetention: new Counter({
      name: "delivery_behind_retention_total",
      help: "behind_retention items handed out",
      registers,
    }),
    directoryLookups: new Counter({
      name: "delivery_directory_lookups_total",
      help: "Requests to the directory for an account's devices, by result (ok, unavailable)",
      labelNames: ["result"],
      registers,
    }),
    devicesRefused: new Counter({
      name: "delivery_devices_refused_total",
      help: "Devices refused for an account of this instance that its directory does not list",
      registers,
    }),
  };
}
