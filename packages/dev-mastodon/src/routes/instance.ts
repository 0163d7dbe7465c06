// GET /api/v2/instance and GET /api/v1/instance: served even when unauthenticated API access is off.
import { renderInstanceV1, renderInstanceV2 } from "../render/instance.js";
import type { RouteContext } from "./context.js";

export function registerInstanceRoutes({ app, state }: RouteContext): void {
  app.get("/api/v2/instance", { config: { alwaysPublic: true } }, async () => renderInstanceV2(state));
  app.get("/api/v1/instance", { config: { alwaysPublic: true } }, async () => renderInstanceV1(state));
}
