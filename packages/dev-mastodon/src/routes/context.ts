import type { FastifyInstance } from "fastify";
import type { InstanceState } from "../state/instance.js";

/** What every route module registers against. */
export interface RouteContext {
  readonly app: FastifyInstance;
  readonly state: InstanceState;
}
