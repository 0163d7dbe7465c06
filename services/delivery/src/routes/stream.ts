import type { ServiceApp } from "@mastodon-mls/service-kit";
import type { StreamSessions } from "../stream.js";

/** GET /v1/stream: the WebSocket inbox. The upgrade is unauthenticated; the first frame is signed. */
export function streamRoutes(sessions: StreamSessions) {
  return async (app: ServiceApp) => {
    app.get(
      "/v1/stream",
      {
        websocket: true,
        schema: {
          summary: "WebSocket: the inbox, pushed (StreamServerFrame / StreamClientFrame, docs/protocol.md)",
        },
      },
      (socket) => {
        sessions.open(socket);
      },
    );
  };
}
