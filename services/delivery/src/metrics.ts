import { Counter, Gauge, type Registry } from "prom-client";

export interface DeliveryMetrics {
  /** Accepted messages by kind (commit, proposal, application). */
  messagesIn: Counter<"kind">;
  /** Refused submissions by kind and reason (an error code, or a screening rule id such as SCR-9). */
  refused: Counter<"kind" | "reason">;
  /** Open, authenticated WebSocket streams. */
  sockets: Gauge;
}

export function createDeliveryMetrics(registry: Registry): DeliveryMetrics {
  return {
    messagesIn: new Counter({
      name: "delivery_messages_accepted_total",
      help: "Messages accepted, by kind",
      labelNames: ["kind"],
      registers: [registry],
    }),
    refused: new Counter({
      name: "delivery_messages_refused_total",
      help: "Messages refused, by kind and reason (error code or screening rule)",
      labelNames: ["kind", "reason"],
      registers: [registry],
    }),
    sockets: new Gauge({
      name: "delivery_stream_sockets",
      help: "Open, authenticated WebSocket streams",
      registers: [registry],
    }),
  };
}
