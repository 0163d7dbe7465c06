import type { MlsDmClient } from "../client.js";
import type { DmEvent } from "../events.js";

export interface SettleOptions {
  /** Rounds of syncing every client before giving up. Default 8. */
  rounds?: number;
  /** Event types that do not count as activity (e.g. background verification's `status_changed`). */
  quietDespite?: readonly DmEvent["type"][];
}

/**
 * Syncs the clients in turn until a whole round brings no new activity, and returns every event each one
 * saw. Throws when they have not settled after `rounds`: something keeps happening that should not.
 */
export async function settle(
  clients: MlsDmClient[],
  opts: SettleOptions = {},
): Promise<Map<MlsDmClient, DmEvent[]>> {
  const ignored = new Set<string>(opts.quietDespite ?? ["status_changed"]);
  const all = new Map<MlsDmClient, DmEvent[]>(clients.map((c) => [c, []]));
  for (let round = 0; round < (opts.rounds ?? 8); round++) {
    let quiet = true;
    for (const c of clients) {
      const events = await c.sync();
      all.get(c)!.push(...events);
      if (events.some((e) => !ignored.has(e.type))) quiet = false;
    }
    if (quiet) return all;
  }
  throw new Error("clients did not settle");
}
