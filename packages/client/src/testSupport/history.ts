import type { MlsDmClient } from "../client.js";

/** The notes (`Create` activities) in a device's history of the group, in order, with their number. */
export async function notes(
  c: MlsDmClient,
  groupId: string,
): Promise<{ text: string; seq: number; own: boolean }[]> {
  return (await c.history(groupId)).flatMap((h) =>
    h.content.kind === "activity" && h.content.activity.type === "Create"
      ? [{ text: h.content.activity.object.content, seq: h.seq, own: h.own }]
      : [],
  );
}
