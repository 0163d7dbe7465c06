import { z } from "zod";
import { LIMITS } from "./constants.js";
import { ProtocolError } from "./errors.js";

// The cleartext inside an application message (DESIGN §8): a restricted ActivityStreams 2.0 profile.
// Version 1 carries plain text only. Validated with zod when sent and when received.

export const CLEARTEXT_VERSION = 1;
export const AS_CONTEXT = "https://www.w3.org/ns/activitystreams";

const Urn = z
  .string()
  .regex(/^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "urn:uuid");
const Identity = z
  .string()
  .regex(/^acct:[^@\s]+@[^@\s]+$/, "acct:user@domain")
  .max(LIMITS.acctLength + 5);
const Timestamp = z.string().datetime({ offset: true });

export const Mention = z
  .object({ type: z.literal("Mention"), href: Identity, name: z.string().max(400) })
  .strict();

export const Note = z
  .object({
    type: z.literal("Note"),
    id: Urn,
    attributedTo: Identity,
    published: Timestamp,
    content: z.string().max(LIMITS.cleartextBytes),
    inReplyTo: Urn.optional(),
    tag: z.array(Mention).max(64).optional(),
  })
  .strict();
export type Note = z.infer<typeof Note>;

const base = {
  "@context": z.literal(AS_CONTEXT),
  v: z.literal(CLEARTEXT_VERSION),
  id: Urn,
  actor: Identity,
  published: Timestamp,
};

export const CreateActivity = z.object({ ...base, type: z.literal("Create"), object: Note }).strict();
export const UpdateActivity = z.object({ ...base, type: z.literal("Update"), object: Note }).strict();
/** Delete, Like, Read and Undo point at a note (or, for Undo, an activity) by id. */
export const DeleteActivity = z.object({ ...base, type: z.literal("Delete"), object: Urn }).strict();
export const LikeActivity = z
  .object({ ...base, type: z.literal("Like"), object: Urn, content: z.string().max(64).optional() })
  .strict();
export const ReadActivity = z.object({ ...base, type: z.literal("Read"), object: Urn }).strict();
export const UndoActivity = z.object({ ...base, type: z.literal("Undo"), object: Urn }).strict();

export const Activity = z.discriminatedUnion("type", [
  CreateActivity,
  UpdateActivity,
  DeleteActivity,
  LikeActivity,
  ReadActivity,
  UndoActivity,
]);
export type Activity = z.infer<typeof Activity>;
export const ACTIVITY_TYPES = ["Create", "Update", "Delete", "Like", "Read", "Undo"] as const;

export type CleartextIn =
  | { kind: "activity"; activity: Activity }
  /** A well-formed envelope of a type or version this client does not know: shown, never dropped. */
  | { kind: "unsupported"; type: string; version: unknown };

const Envelope = z.object({ type: z.string().max(64), v: z.unknown() }).passthrough();

export function encodeCleartext(activity: Activity): Uint8Array {
  const checked = Activity.parse(activity);
  const bytes = new TextEncoder().encode(JSON.stringify(checked));
  if (bytes.byteLength > LIMITS.cleartextBytes) throw new ProtocolError("payload_too_large");
  return bytes;
}

/**
 * Decodes received cleartext. Known types must validate; unknown types or versions come back as
 * `unsupported`. The caller still enforces the sender rules (`checkAttribution`).
 */
export function decodeCleartext(bytes: Uint8Array): CleartextIn {
  if (bytes.byteLength > LIMITS.cleartextBytes) throw new ProtocolError("payload_too_large");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new ProtocolError("bad_request", "The message is not UTF-8 JSON.");
  }
  const envelope = Envelope.safeParse(json);
  if (!envelope.success) throw new ProtocolError("bad_request", "The message is not an activity.");
  const { type, v } = envelope.data;
  if (v !== CLEARTEXT_VERSION || !(ACTIVITY_TYPES as readonly string[]).includes(type)) {
    return { kind: "unsupported", type, version: v };
  }
  const parsed = Activity.safeParse(json);
  if (!parsed.success) throw new ProtocolError("bad_request", `Invalid ${type} activity.`);
  return { kind: "activity", activity: parsed.data };
}

/**
 * DESIGN §8: the activity's actor and a note's `attributedTo` must equal the MLS sender's identity.
 * Returns a reason when the rule is broken, so the caller can surface the refusal.
 */
export function checkAttribution(activity: Activity, senderIdentity: string): string | undefined {
  if (activity.actor !== senderIdentity) return "actor is not the MLS sender";
  if (
    (activity.type === "Create" || activity.type === "Update") &&
    activity.object.attributedTo !== senderIdentity
  ) {
    return "attributedTo is not the MLS sender";
  }
  return undefined;
}
