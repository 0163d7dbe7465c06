import { randomUUID } from "node:crypto";
import { AS_CONTEXT, CLEARTEXT_VERSION, type Activity, type Note } from "@mastodon-mls/protocol";

export interface NoteOptions {
  /** `urn:uuid:` id of the note this one answers. */
  inReplyTo?: string;
  now?: Date;
}

/**
 * DESIGN §8: a `Create` of a plain-text `Note`, attributed to the sender's own identity. Fresh random
 * `urn:uuid:` ids make them unique within the group.
 */
export function buildCreateNote(
  identity: string,
  text: string,
  opts: NoteOptions = {},
): Activity & { object: Note } {
  const published = (opts.now ?? new Date()).toISOString();
  const note: Note = {
    type: "Note",
    id: `urn:uuid:${randomUUID()}`,
    attributedTo: identity,
    published,
    content: text,
    ...(opts.inReplyTo !== undefined ? { inReplyTo: opts.inReplyTo } : {}),
  };
  return {
    "@context": AS_CONTEXT,
    v: CLEARTEXT_VERSION,
    type: "Create",
    id: `urn:uuid:${randomUUID()}`,
    actor: identity,
    published,
    object: note,
  };
}
