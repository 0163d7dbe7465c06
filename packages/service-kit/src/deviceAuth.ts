import type { FastifyRequest } from "fastify";
import { verifyRequest, type DeviceCertificate, type NonceStore } from "@mastodon-mls/bridge";

export interface DeviceAuthConfig {
  /** This service's own origin, from its config — never the Host header. */
  origin: string;
  nonces: NonceStore;
  now?: () => number;
}

/**
 * Authenticates a device-signed request (DESIGN §7) and returns its verified certificate. Runs before
 * anything else is done on the requester's behalf. The service must be served at the root of its origin,
 * so that the path a client signs is the path the service sees.
 */
export function authenticateDevice(req: FastifyRequest, cfg: DeviceAuthConfig): Promise<DeviceCertificate> {
  return verifyRequest(
    req.headers.authorization,
    { method: req.method, origin: cfg.origin, pathAndQuery: req.url, body: req.rawBody },
    { nonces: cfg.nonces, now: cfg.now?.() },
  );
}
