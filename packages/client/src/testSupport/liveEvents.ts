import type { DmEvent } from "../events.js";

/** The next event of `live` (an `events()` iterator) that `pick` accepts; the others are passed over. */
export async function nextMatching(
  live: AsyncGenerator<DmEvent>,
  pick: (e: DmEvent) => boolean,
): Promise<DmEvent> {
  for (;;) {
    const r = await live.next();
    if (r.done === true) throw new Error("events() ended");
    if (pick(r.value)) return r.value;
  }
}
